"""The assembly: configuration, plugin discovery, the server's wiring, the command line and the
supervisor of several processes. The only layer that may import every other."""
