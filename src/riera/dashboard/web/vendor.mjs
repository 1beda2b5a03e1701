// The dashboard's vendored libraries, bundled by scripts/build-dashboard-assets.sh into
// ../static/vendor.js (an IIFE: no module loader, no CDN, works offline). The page loads it
// before app.js and reads window.RieraVendor.
import dagre from "@dagrejs/dagre";
import uPlot from "uplot";

window.RieraVendor = { uPlot, dagre };
