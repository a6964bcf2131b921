"""`dermsweep web`: the browser model (ONNX + baked PIL resize), the server API, and the page in headless Chromium.

One real smoke training run (the `smoke_run` fixture, a MobileNet v1 at 64x64) is promoted to a private registry
and served in-process on a free loopback port. Tolerance for browser/ONNX vs Python/Keras: 0.02 absolute per class.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from dermsweep.data.images import load_rgb
from dermsweep.data.sources.ham10000 import FULL_NAMES
from helpers.browser import wait_js
from helpers.config import REPO

TOL = 0.02  # absolute, per class probability
ARTIFACTS = REPO / "artifacts" / "web"

pytestmark = pytest.mark.slow


def _images(ham10000: Path, n: int = 2) -> list[Path]:
    files = sorted((ham10000 / "HAM10000_images_part_1").glob("*.jpg"))[:n]
    if not files:
        pytest.skip(f"no HAM10000 images under {ham10000}")
    return files


def _serve(app, dist):
    from dermsweep.web.server import make_server

    httpd = make_server(app, "127.0.0.1", 0, dist, quiet=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/"


@pytest.fixture(scope="module")
def web(smoke_run):
    """The app for models:/web-test@champion (the smoke run, promoted), served on a free port in a thread."""
    from dermsweep.shipping.promotion import promote
    from dermsweep.tracking.store import connect
    from dermsweep.web.server import WebModel, ensure_runtime

    client = connect(smoke_run["uri"], create=False)
    cwd = os.getcwd()
    os.chdir(smoke_run["store"])  # any artifacts MLflow writes relative to cwd stay in the temp store
    try:
        promote(client, smoke_run["experiment"], "web-test")
        app = WebModel("models:/web-test@champion", client, say=lambda m: None)
    finally:
        os.chdir(cwd)
    dist = ensure_runtime(install=True, say=print)
    httpd, url = _serve(app, dist)
    yield {"url": url, "app": app, "dist": dist, "client": client}
    httpd.shutdown()
    httpd.server_close()
    shutil.rmtree(app.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def sensitive(web, tmp_path_factory):
    """A model whose probabilities really move with the image, to make the tolerance mean something.

    The smoke run's model is near-uniform (random init, a few steps: ~1/7 per class whatever the image), so a tiny
    browser-vs-Python difference on it proves little. This one is the ImageNet-pretrained MobileNet v1 a=0.25 from
    ../shared/weights with a seeded random head, at 96x128 (real 150x200 images are downscaled by a non-integer
    factor), saved as a .keras file and served the same way.
    """
    import keras
    from omegaconf import OmegaConf

    from dermsweep.training.model import build
    from dermsweep.web.server import WebModel

    weights = REPO.parent / "shared" / "weights" / "mobilenet_v1_0.25_224_no_top.weights.h5"
    if not weights.is_file():
        pytest.skip(f"pretrained weights not found at {weights}")
    keras.utils.set_random_seed(0)
    cfg = OmegaConf.create(
        {"name": "mobilenet_v1", "height": 96, "width": 128, "alpha": 0.25, "weights": str(weights), "dropout": 0.0}
    )
    model = build(cfg, 7)
    folder = tmp_path_factory.mktemp("sensitive")
    model.save(folder / "model.keras")
    (folder / "model_info.json").write_text(
        json.dumps(
            {"class_names": ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"], "input_height": 96, "input_width": 128}
        )
    )
    app = WebModel(str(folder / "model.keras"), None, say=lambda m: None)
    httpd, url = _serve(app, web["dist"])
    yield {"url": url, "app": app}
    httpd.shutdown()
    httpd.server_close()
    shutil.rmtree(app.workdir, ignore_errors=True)


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def _post(url: str, body: bytes):
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _keras_probs(app, path: Path) -> np.ndarray:
    """The Python model's probabilities with the training preprocessing (load_rgb)."""
    x = load_rgb(path, app.height, app.width)[None].astype(np.float32)
    return np.asarray(app.model(x, training=False))[0]


# ---------------------------------------------------------------- browser model, without a browser
@pytest.mark.parametrize("which", ["web", "sensitive"])
def test_browser_onnx_matches_keras_on_original_size_images(which, request, ham10000, tmp_path):
    """The ONNX file the page runs, fed the full-size decoded image, agrees with Keras on load_rgb's pixels."""
    from PIL import Image

    from dermsweep.shipping.converters import onnx_session
    from dermsweep.web.browser_model import decode_full_size

    app = request.getfixturevalue(which)["app"]
    sess = onnx_session(app.onnx_path)
    files = _images(ham10000, 4)
    big = tmp_path / "big.png"  # a larger, odd-sized photo: exercises a real downscale by a non-integer factor
    Image.open(files[0]).resize((1003, 757), Image.Resampling.BICUBIC).save(big)
    worst, probs = 0.0, []
    for f in [*files, big]:
        full = decode_full_size(f.read_bytes())
        onnx_p = sess.run(None, {"pixels": full[None].astype(np.float32)})[0][0]
        keras_p = _keras_probs(app, f)
        probs.append(keras_p)
        worst = max(worst, float(np.abs(onnx_p - keras_p).max()))
        assert onnx_p.argmax() == keras_p.argmax()
    spread = float(np.ptp(np.array(probs), axis=0).max())
    print(
        f"[{which}] ONNX (baked resize, full-size input) vs Keras (load_rgb): max |dp| = {worst:.2e}; "
        f"largest change of a class probability between images: {spread:.3f}"
    )
    assert worst <= TOL


def test_baked_resize_reproduces_pil_pixels(ham10000):
    """The resize inside the graph is PIL's bilinear: at most a few levels off on a few pixels (rounding)."""
    import keras

    from dermsweep.shipping.converters import onnx_session
    from dermsweep.web.browser_model import build_browser_onnx, decode_full_size

    inp = keras.Input((64, 80, 3), name="image")
    identity = keras.Model(inp, keras.layers.Identity()(inp))
    with tempfile.TemporaryDirectory() as tmp:
        build_browser_onnx(identity, 64, 80, Path(tmp) / "id.onnx")
        sess = onnx_session(Path(tmp) / "id.onnx")
        for f in _images(ham10000, 2):
            full = decode_full_size(f.read_bytes())
            got = sess.run(None, {"pixels": full[None].astype(np.float32)})[0][0]
            diff = np.abs(got.astype(int) - load_rgb(f, 64, 80).astype(int))
            assert diff.max() <= 3 and (diff > 0).mean() < 0.05, (diff.max(), (diff > 0).mean())


# ---------------------------------------------------------------- server API
def test_info_names_the_promoted_version_and_its_metrics(web, smoke_run):
    status, ctype, body = _get(web["url"] + "api/info")
    info = json.loads(body)
    assert status == 200 and ctype == "application/json"
    assert info["model_name"] == "web-test" and info["version"] == "1" and "champion" in info["aliases"]
    assert info["run_id"] == smoke_run["run_id"] and info["promoted_at"].startswith("20")
    metrics = web["client"].get_run(smoke_run["run_id"]).data.metrics
    assert info["val_balanced_accuracy"] == pytest.approx(metrics["final_val/balanced_accuracy"])
    assert info["test_balanced_accuracy"] == pytest.approx(metrics["test/balanced_accuracy"])
    assert info["full_names"] == {c: FULL_NAMES[c] for c in info["class_names"]}
    assert info["onnx"]["error"] is None and info["onnx"]["input"] == "pixels"
    status, _, page = _get(web["url"])
    assert status == 200 and b"not a diagnosis" in page
    status, _, model = _get(web["url"] + "model.onnx")
    assert status == 200 and len(model) > 10_000


def test_predict_fallback_matches_python_model(web, ham10000):
    from dermsweep.shipping.predict import Predictor

    app = web["app"]
    img = _images(ham10000, 1)[0]
    status, out = _post(web["url"] + "api/predict", img.read_bytes())
    assert status == 200, out
    (expected,) = Predictor(lambda x: np.asarray(app.model(x, training=False)), app.ref.meta, "t").predict_files([img])
    assert out["label"] == expected.top[0]["label"] and out["name"] == FULL_NAMES[out["label"]]
    for c, p in expected.probabilities.items():
        assert out["probabilities"][c] == pytest.approx(p, abs=1e-5)
    assert [t["probability"] for t in out["top"]] == sorted(out["probabilities"].values(), reverse=True)


@pytest.mark.parametrize(
    "body, message",
    [
        (b"this is a text file, not a photo\n", "not an image"),
        (b"", "empty"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 40, "image"),  # a JPEG header and nothing else
    ],
)
def test_bad_input_is_a_clear_400(web, body, message):
    for endpoint in ("api/predict", "api/gradcam"):
        status, out = _post(web["url"] + endpoint, body)
        assert status == 400 and message in out["error"] and out["error"].startswith("cannot read this file")
    assert _get(web["url"] + "api/info")[0] == 200  # still serving


def test_gradcam_overlay_and_heatmap(web, ham10000):
    from PIL import Image

    app = web["app"]
    status, out = _post(web["url"] + "api/gradcam", _images(ham10000, 1)[0].read_bytes())
    assert status == 200, out
    assert out["layer"] == "conv_pw_13_relu"  # MobileNet v1's last conv block inside the nested backbone
    cam = np.array(out["heatmap"])
    assert cam.ndim == 2 and cam.min() >= 0 and cam.max() <= 1
    png = Image.open(io.BytesIO(base64.b64decode(out["overlay"].split(",", 1)[1])))
    assert png.format == "PNG" and min(png.size) >= 64
    assert out["label"] in app.class_names


def test_unknown_paths_and_traversal_are_404(web):
    for path in ("nope", "static/../server.py", "vendor/../../../../etc/passwd", "static/%2e%2e/server.py"):
        with pytest.raises(urllib.error.HTTPError) as exc:
            _get(web["url"] + path)
        assert exc.value.code == 404


def test_cli_has_a_web_subcommand():
    from dermsweep.cli import build_parser, serve

    args = build_parser().parse_args(["web", "--model", "runs:/abc/model", "--port", "0"])
    assert args.fn is serve.web and args.host == "127.0.0.1" and args.port == 0


# ---------------------------------------------------------------- the page in headless Chromium
@pytest.fixture(scope="module")
def browser(web, request):
    """The module's headless Chromium (the `chromium` fixture), once the page has its ONNX runtime to load."""
    if web["dist"] is None:
        pytest.skip("onnxruntime-web is not installed and npm could not install it (npm missing or no registry)")
    return request.getfixturevalue("chromium")


def _upload(driver, path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "file").send_keys(str(path))


@pytest.mark.browser
def test_page_classifies_in_the_browser_like_python(web, browser, ham10000, tmp_path):
    from selenium.webdriver.common.by import By

    app = web["app"]
    driver = browser
    driver.get(web["url"])
    wait_js(driver, "return document.body.dataset.state === 'ready'")
    assert driver.find_element(By.ID, "path").get_attribute("data-path") == "browser", driver.find_element(
        By.ID, "path"
    ).text
    assert "never leaves" in driver.find_element(By.ID, "path").text
    assert "v1" in driver.find_element(By.ID, "model-version").text
    assert "not a diagnosis" in driver.find_element(By.ID, "disclaimer").text

    worst = 0.0
    for img in _images(ham10000, 2):
        _upload(driver, img)
        result = wait_js(
            driver,
            "const s = window.dermsweep; return document.body.dataset.state === 'done' "
            "&& s.result && s.result.mode ? s.result : null",
        )
        assert result["mode"] == "browser"
        expected = _keras_probs(app, img)
        got = np.array([result["probabilities"][c] for c in app.class_names])
        worst = max(worst, float(np.abs(got - expected).max()))
        best = app.class_names[int(expected.argmax())]
        assert driver.find_element(By.ID, "top-name").text == FULL_NAMES[best]
        shown = {
            e.get_attribute("data-label"): float(e.get_attribute("data-probability"))
            for e in driver.find_elements(By.CSS_SELECTOR, ".bar-value")
        }
        assert set(shown) == set(app.class_names)
        driver.execute_script("window.dermsweep.result = null")
    print(
        f"[smoke champion] browser (onnxruntime-web) vs Python (Keras + load_rgb): max |dp| = {worst:.2e} "
        f"(tolerance {TOL})"
    )
    assert worst <= TOL

    driver.find_element(By.ID, "explain").click()
    wait_js(driver, "return document.body.dataset.cam === 'done'")
    assert "conv_pw_13_relu" in driver.find_element(By.ID, "cam-caption").text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "web-browser-path.png"
    driver.save_screenshot(str(shot))
    print(f"screenshot: {shot}")

    text = tmp_path / "notes.jpg"
    text.write_text("this is a text file, not a photo")
    _upload(driver, text)
    wait_js(driver, "return document.body.dataset.state === 'error'")
    error = driver.find_element(By.ID, "error")
    assert error.is_displayed() and "not an image" in error.text
    assert not driver.find_element(By.ID, "preview").is_displayed()  # no stale image or result beside the error
    assert not driver.find_element(By.ID, "result").is_displayed()
    driver.save_screenshot(str(ARTIFACTS / "web-bad-file.png"))


@pytest.mark.browser
def test_page_matches_python_with_an_image_sensitive_model(sensitive, browser, ham10000):
    """Same comparison on a model whose output really depends on the pixels (see the `sensitive` fixture)."""
    from selenium.webdriver.common.by import By

    app = sensitive["app"]
    driver = browser
    driver.get(sensitive["url"])
    wait_js(driver, "return document.body.dataset.state === 'ready'")
    assert driver.find_element(By.ID, "path").get_attribute("data-path") == "browser"
    assert "not promoted" in driver.find_element(By.ID, "model-promoted").text
    worst, probs = 0.0, []
    for img in _images(ham10000, 4):
        driver.execute_script("window.dermsweep.result = null")
        _upload(driver, img)
        result = wait_js(
            driver,
            "const s = window.dermsweep; return document.body.dataset.state === 'done' && s.result ? s.result : null",
        )
        expected = _keras_probs(app, img)
        probs.append(expected)
        got = np.array([result["probabilities"][c] for c in app.class_names])
        worst = max(worst, float(np.abs(got - expected).max()))
        assert driver.find_element(By.ID, "top-name").text == FULL_NAMES[app.class_names[int(expected.argmax())]]
    spread = float(np.ptp(np.array(probs), axis=0).max())
    print(
        f"[pretrained 96x128] browser vs Python: max |dp| = {worst:.2e} (tolerance {TOL}); "
        f"a class probability moves by up to {spread:.3f} between these images"
    )
    assert spread > 5 * TOL, "the model is not sensitive enough for the comparison to mean anything"
    assert worst <= TOL
    driver.find_element(By.ID, "explain").click()
    wait_js(driver, "return document.body.dataset.cam === 'done'")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "web-pretrained.png"
    driver.save_screenshot(str(shot))
    print(f"screenshot: {shot}")


@pytest.mark.browser
def test_page_server_mode_says_so_and_agrees(web, browser, ham10000, tmp_path):
    from selenium.webdriver.common.by import By

    app = web["app"]
    driver = browser
    driver.get(web["url"] + "?mode=server")
    wait_js(driver, "return document.body.dataset.state === 'ready'")
    path = driver.find_element(By.ID, "path")
    assert path.get_attribute("data-path") == "server" and "sent to this app" in path.text
    img = _images(ham10000, 1)[0]
    _upload(driver, img)
    result = wait_js(
        driver,
        "const s = window.dermsweep; return document.body.dataset.state === 'done' && s.result ? s.result : null",
    )
    assert result["mode"] == "server"
    expected = _keras_probs(app, img)
    got = np.array([result["probabilities"][c] for c in app.class_names])
    assert np.abs(got - expected).max() <= 1e-5
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    _upload(driver, text)
    wait_js(driver, "return document.body.dataset.state === 'error'")
    assert "not an image" in driver.find_element(By.ID, "error").text
