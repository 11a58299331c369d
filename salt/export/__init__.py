"""Export to ONNX, the format ATLAS's C++ (Athena) runs: `to_onnx` and `get_onnx_metadata`.

* `loading`: a trained run (config.yaml + checkpoint) -> the model as trained, without Lightning;
* `outputs`: output names, ``--combine_outputs`` and ``--rename``;
* `wrapper`: the one-jet, export-safe module that is traced;
* `parity`: onnxruntime against PyTorch's packed training path;
* `metadata`: what the file says about itself, and `get_onnx_metadata`;
* `to_onnx`: the command.
"""
