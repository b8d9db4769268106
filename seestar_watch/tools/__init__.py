"""Tools beside the path of a frame: the demo, the quicklook stage, synthetic frames."""
