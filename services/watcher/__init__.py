"""The directory watcher (conda-store's ``watch_paths``): keeps every environment file of the
watched directories built in the filesystem namespace."""
