"""The model folder (config.json + safetensors, no pickle) and its export to ONNX / TorchScript."""
