"""Radio control lines (PTT, COR/carrier), VOX, the transmit path and channel patching."""
