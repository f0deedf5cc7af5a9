"""What every floor uses and that belongs to no room: pathology labels, the clock, the device
choice, files (image types, identity, atomic writes) and how a command line reports a user's error.
Imports nothing else of the project."""
