"""Real rendering with graphviz, the `connectome render` command, and the HTML reports."""
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import torch
import torchvision
from click.testing import CliRunner

import connectome
from connectome.models import lenet_5
from connectome.render import render, to_dot
from connectome.render.style import alive_colour
from connectome_cli.main import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
DEMO = os.path.join(ROOT, "examples", "pruned_lenet.py") + ":build"
SAVE = os.path.join(ROOT, "examples", "save_pruned_lenet.py")
CLI = [os.path.join(os.path.dirname(sys.executable), "connectome")]


def tool(name: str) -> str:
    """The path of an external program; `make test` installs them, so there it must exist."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CONNECTOME_STRICT_TOOLS"):
            pytest.fail(f"{name} is not installed, but `make test` should have installed it")
        pytest.skip(f"{name} is not installed")
    return path


def run(*args):
    return CliRunner().invoke(main, list(args))


def _res():
    m = lenet_5()
    with torch.no_grad():
        m[3].weight[:8] = 0
    return connectome.analyze(m, input_shape=(1, 1, 28, 28))


def test_render_svg_png_pdf_and_dot(tmp_path):
    tool("dot")
    d = to_dot(_res())
    render(d, str(tmp_path / "g.svg"))
    svg = ET.parse(tmp_path / "g.svg").getroot()
    assert svg.tag.endswith("svg")
    assert svg.get("width") and alive_colour(1.0) in (tmp_path / "g.svg").read_text()
    render(d, str(tmp_path / "g.png"))
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    png = torchvision.io.decode_png(torchvision.io.read_file(str(tmp_path / "g.png")))
    assert png.shape[1] > 200 and png.shape[2] > 200
    render(d, str(tmp_path / "g.pdf"))
    assert (tmp_path / "g.pdf").read_bytes()[:5] == b"%PDF-"
    render(d, str(tmp_path / "g.dot"))
    assert (tmp_path / "g.dot").read_text() == d.source
    unit = to_dot(_res(), level="unit")
    render(unit, str(tmp_path / "u.svg"))
    assert ET.parse(tmp_path / "u.svg").getroot().tag.endswith("svg")


def test_render_command(tmp_path):
    tool("dot")
    out = tmp_path / "lenet.svg"
    r = run("render", DEMO, "--level", "unit", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert "too many to read" in r.stderr            # the demo at 50x is too dense for a unit picture
    assert ET.parse(out).getroot().tag.endswith("svg")
    r = run("render", "torchvision:resnet18", "--input-shape", "1,3,32,32", "--fold", "-o", str(tmp_path / "r.png"))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_render_command_bad_input(tmp_path):
    r = run("render", DEMO, "-o", str(tmp_path / "x.jpg"))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert "cannot tell the format" in r.stderr and ".svg" in r.stderr
    r = run("render", DEMO, "--level", "unit", "--layers", "conv*", "-o", str(tmp_path / "x.svg"))
    assert r.exit_code == 2 and "no linear or conv layer matches" in r.stderr
    r = run("render", DEMO, "-o", str(tmp_path / "missing" / "x.dot"))
    assert r.exit_code == 2 and "no such directory" in r.stderr
    assert not (tmp_path / "x.svg").exists() and not (tmp_path / "x.jpg").exists()


def test_missing_dot_is_one_clear_line(tmp_path):
    env = dict(os.environ, PATH=os.path.dirname(sys.executable))     # graphviz's dot is not on this PATH
    p = subprocess.run(CLI + ["render", DEMO, "-o", str(tmp_path / "x.svg")], env=env, capture_output=True,
                       text=True, cwd=ROOT)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [p.stderr.strip()]
    assert "dot" in p.stderr and "install graphviz" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run(CLI + ["render", DEMO, "-o", str(tmp_path / "x.dot")], env=env, capture_output=True,
                       text=True, cwd=ROOT)
    assert p.returncode == 0 and (tmp_path / "x.dot").read_text().startswith("digraph")


_EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:|//)|@import|url\(\s*["']?(?:https?:|//)|<script|<link|<iframe""",
                       re.I)


def _check_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert _EXTERNAL.search(page) is None
    assert page.count("<svg") == 1


def test_analyze_html_report(tmp_path):
    tool("dot")
    out = tmp_path / "report.html"
    r = run("analyze", DEMO, "--html", str(out))
    assert r.exit_code == 0, r.output
    page = out.read_text()
    _check_self_contained(page)
    assert "DEAD WEIGHTS" in page and "99.24%" in page and "97.99%" in page
    assert page.count("<tr>") + page.count('<tr class="dead">') == 4 + 1 + 3     # summary, header, 3 layers
    assert oct(os.stat(out).st_mode & 0o777) != oct(0o600)      # a report is readable like any file


def test_audit_html_report(tmp_path):
    tool("dot")
    ck = tmp_path / "lenet.pt"
    subprocess.run([sys.executable, SAVE, str(ck)], check=True, cwd=ROOT)
    out = tmp_path / "audit.html"
    r = run("audit", str(ck), "--arch", "connectome:lenet_300_100", "--claim-sparsity", "0.99", "--format", "html",
            "-o", str(out))
    assert r.exit_code == 0, r.output
    page = out.read_text()
    _check_self_contained(page)
    assert "Audit PASSED" in page and "Collapse margin: 6 weight(s)" in page and "<h2>Findings</h2>" in page


def test_html_report_in_headless_chromium(tmp_path):
    tool("dot")
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        tool("chromium")
    out = tmp_path / "report.html"
    assert run("analyze", DEMO, "--html", str(out)).exit_code == 0
    shot = tmp_path / "shot.png"
    p = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--enable-logging=stderr", "--v=0", "--host-resolver-rules=MAP * ~NOTFOUND",
                        f"--screenshot={shot}", "--window-size=1200,1600", out.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    logs = p.stderr
    assert "Failed to load resource" not in logs and "Uncaught" not in logs and "net::ERR" not in logs
    img = torchvision.io.decode_png(torchvision.io.read_file(str(shot)))[:3]
    # the diagram is visible: pixels of the fully-alive fill and of the partly-alive fill are on screen
    for hex_ in (alive_colour(1.0), alive_colour(120 / 300)):     # input and output; layers 1 and 2
        rgb = torch.tensor([int(hex_[i:i + 2], 16) for i in (1, 3, 5)]).view(3, 1, 1)
        assert ((img.int() - rgb).abs().amax(0) <= 6).sum() > 500, hex_
