"""autocompress: search structured pruning, quantization, split and adaptation policies that fit trained networks
to IoT devices."""

__version__ = "0.1.0"
