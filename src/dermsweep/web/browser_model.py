"""The ONNX model the browser runs: the training resize baked in front of the classifier.

Training (and predict/serve) resize every image with `dermsweep.data.images.load_rgb`: PIL bilinear with
antialiasing (the filter widens by the scale factor when shrinking), horizontal pass first, each pass rounded to
uint8. A browser canvas resize is a different filter, so instead the page feeds the decoded image at its original
size, (1, H, W, 3) float32 0-255, and the graph does PIL's resize itself:

    Resize(width, linear, antialias=1, half_pixel) -> Round -> Clip(0, 255)
    Resize(height, ...)                            -> Round -> Clip(0, 255) -> the Keras model (ONNX, opset 18)

ONNX's antialiased linear Resize (opset 18) is the same triangle filter as PIL's BILINEAR; PIL rounds to 8 bits
between and after the passes, and so do we. What is left is PIL's fixed-point weights and round-half-up against
float weights and round-half-even: a few pixels off by one level (measured in tests/test_web.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OPSET = 18
INPUT_NAME = "pixels"


def _resize_prefix(height: int, width: int, model_input: str):
    from onnx import TensorProto, helper

    def const(name, values, dtype):
        arr = np.asarray(values, dtype=dtype)
        return helper.make_tensor(
            name, TensorProto.INT64 if dtype == np.int64 else TensorProto.FLOAT, arr.shape, arr.flatten().tolist()
        )

    inits = [
        const("rs_w_size", [width], np.int64),
        const("rs_h_size", [height], np.int64),
        const("rs_lo", 0.0, np.float32),
        const("rs_hi", 255.0, np.float32),
    ]
    nodes = []
    prev = INPUT_NAME
    for axis, size, tag in ((2, "rs_w_size", "w"), (1, "rs_h_size", "h")):
        nodes += [
            helper.make_node(
                "Resize",
                [prev, "", "", size],
                [f"rs_{tag}_resized"],
                name=f"resize_{tag}",
                mode="linear",
                antialias=1,
                axes=[axis],
                coordinate_transformation_mode="half_pixel",
            ),
            helper.make_node("Round", [f"rs_{tag}_resized"], [f"rs_{tag}_rounded"], name=f"round_{tag}"),
        ]
        out = model_input if tag == "h" else f"rs_{tag}_clipped"
        nodes.append(helper.make_node("Clip", [f"rs_{tag}_rounded", "rs_lo", "rs_hi"], [out], name=f"clip_{tag}"))
        prev = out
    return nodes, inits


def build_browser_onnx(model, height: int, width: int, out_path: str | Path) -> dict:
    """Export `model` (Keras, raw 0-255 RGB in) to ONNX with the PIL resize in front. Returns input/output names."""
    import onnx
    from onnx import TensorProto, helper

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    plain = out_path.with_name(out_path.stem + ".plain.onnx")
    model(np.full((1, height, width, 3), 128, np.float32))  # a freshly loaded model must be called once
    model.export(str(plain), format="onnx", verbose=False, opset_version=OPSET)
    m = onnx.load(str(plain))
    plain.unlink()
    g = m.graph
    old_input = g.input[0].name
    nodes, inits = _resize_prefix(height, width, old_input)
    new_input = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, "height", "width", 3])
    rest = list(g.node)
    del g.node[:]
    g.node.extend(nodes + rest)  # prepend: nodes must stay topologically sorted
    g.initializer.extend(inits)
    del g.input[0]
    g.input.insert(0, new_input)
    onnx.checker.check_model(m)
    onnx.save(m, str(out_path))
    return {"input": INPUT_NAME, "output": g.output[0].name, "opset": OPSET}


def decode_full_size(data: bytes) -> np.ndarray:
    """The image at its own size as uint8 RGB, as the browser hands it to the model: the decoder's rules (upright by
    EXIF, transparent pixels over white, 16-bit to 8-bit) without the resize. Raises BadImage."""
    from ..data.images import decode_rgb

    return np.asarray(decode_rgb(data), dtype=np.uint8)
