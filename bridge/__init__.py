"""jingbao bridge: channels, audio sources and sinks, segmentation, archive and the service that wires them."""
