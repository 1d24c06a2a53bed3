"""Transport-agnostic GlobalManager core: ports shared by controllers, hub and runtimes."""
