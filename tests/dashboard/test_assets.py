"""The dashboard's vendored JavaScript: ``static/vendor.js`` (uPlot and dagre, bundled by
``scripts/build-dashboard-assets.sh`` from the pinned npm project in ``dashboard/web/``) carries
the MIT notices of what it bundles, defines ``window.RieraVendor`` when a page loads it, and
ships in the wheel. ``.ci/run`` rebuilds it and compares; these tests check the committed files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import riera
from services import service_missing

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(riera.__file__).parent
STATIC = PACKAGE / "dashboard" / "static"
WEB = ROOT / "src" / "riera" / "dashboard" / "web"
BUNDLED = ("uplot", "@dagrejs/dagre", "@dagrejs/graphlib")  # graphlib is inlined in dagre

# Runs the bundle as a page would (an IIFE reading ``window``), with the few browser globals
# uPlot touches at load time faked, then lays out a->b, a->c with dagre.
NODE_PROBE = r"""
const fs = require("fs"), vm = require("vm");
const noop = () => {};
const fake = {
  window: globalThis, document: {}, navigator: { language: "en-US" }, devicePixelRatio: 1,
  matchMedia: () => ({ addEventListener: noop, removeEventListener: noop }),
  CustomEvent: class {}, addEventListener: noop, removeEventListener: noop, dispatchEvent: noop,
};
for (const [k, v] of Object.entries(fake))
  Object.defineProperty(globalThis, k, { value: v, configurable: true, writable: true });
vm.runInThisContext(fs.readFileSync(process.argv[1], "utf8"), { filename: "vendor.js" });
const { uPlot, dagre } = window.RieraVendor;
const g = new dagre.graphlib.Graph();
g.setGraph({});
g.setDefaultEdgeLabel(() => ({}));
for (const n of ["a", "b", "c"]) g.setNode(n, { width: 40, height: 20 });
g.setEdge("a", "b");
g.setEdge("a", "c");
dagre.layout(g);
const nodes = Object.fromEntries(g.nodes().map((n) => [n, { x: g.node(n).x, y: g.node(n).y }]));
console.log(JSON.stringify({ uPlot: typeof uPlot, layout: typeof dagre.layout, nodes }));
"""


def _pins() -> dict[str, str]:
    package = json.loads((WEB / "package.json").read_text())
    return {**package["dependencies"], **package["devDependencies"]}


def test_versions_are_pinned_exactly_and_locked() -> None:
    package = json.loads((WEB / "package.json").read_text())
    assert package["private"] is True
    lock = json.loads((WEB / "package-lock.json").read_text())
    # lockfileVersion 3 is read by npm >= 7; Debian bookworm and trixie ship npm 9.2.
    assert lock["lockfileVersion"] == 3
    for name, version in _pins().items():
        assert version[0].isdigit(), f"{name} must be pinned to an exact version, not {version!r}"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, name
    for name in BUNDLED:
        assert lock["packages"][f"node_modules/{name}"]["license"] == "MIT", name


def test_the_bundle_opens_with_the_mit_licence_of_everything_it_bundles() -> None:
    bundle = (STATIC / "vendor.js").read_text(encoding="ascii")  # esbuild escapes non-ASCII
    licences = (STATIC / "THIRD_PARTY_LICENSES.txt").read_text(encoding="ascii")
    assert bundle.startswith("/*!\n" + licences + "*/")  # a comment minifiers keep
    lock = json.loads((WEB / "package-lock.json").read_text())["packages"]
    for name in BUNDLED:
        assert f"{name} {lock[f'node_modules/{name}']['version']} (MIT)" in licences, name
    assert licences.count("Permission is hereby granted, free of charge") == len(BUNDLED)
    assert "Copyright (c) 2022 Leon Sorokin" in licences  # uPlot
    assert licences.count("Copyright (c) 2012-2014 Chris Pettitt") == 2  # dagre, graphlib
    assert "window.RieraVendor=" in bundle
    css = (STATIC / "vendor.css").read_text(encoding="ascii")
    assert css.startswith(f"/*! uPlot {_pins()['uplot']} (MIT licence)")
    assert "Permission is hereby granted" in css and ".uplot" in css


def test_the_bundle_defines_uplot_and_dagre_which_lays_out_a_graph() -> None:
    node = shutil.which("node")
    if node is None:
        service_missing("node is not installed: it runs vendor.js (apt-get install nodejs)")
    done = subprocess.run(
        [node, "-e", NODE_PROBE, str(STATIC / "vendor.js")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["uPlot"] == "function" and result["layout"] == "function"
    a, b, c = (result["nodes"][n] for n in "abc")
    for point in (a, b, c):
        assert all(isinstance(point[axis], int | float) for axis in "xy"), result
    # top to bottom: a on the first rank, b and c side by side on the next
    assert a["y"] < b["y"] == c["y"] and b["x"] != c["x"], result


def test_the_wheel_carries_every_static_file() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["riera"]
    # setuptools expands package-data globs relative to the package directory
    covered = {path for pattern in patterns for path in PACKAGE.glob(pattern)}
    shipped = {path for path in STATIC.iterdir() if path.is_file()}
    assert {"vendor.js", "vendor.css", "THIRD_PARTY_LICENSES.txt", "index.html"} <= {
        path.name for path in shipped
    }
    assert shipped <= covered, sorted(path.name for path in shipped - covered)
