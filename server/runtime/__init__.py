"""The torch runtime under the plugins: device workers and placement, packed inputs, oneDNN
linear layers, tracing and compiling, thread settings, per-thread tokenizers, model sources."""
