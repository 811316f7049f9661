"""First-party plugins: one module per BERT variant, each registered as a ``bertserve.plugins`` entry point."""
