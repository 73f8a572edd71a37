"""The model layer: loading a LLaVA checkpoint (quantized or not), putting adapters on it, saving and loading
an adapted model, the tiny random models used offline, and the model card."""
