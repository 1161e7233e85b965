"""Device and link profiles, the hardware cost model, and measurement on this machine."""
