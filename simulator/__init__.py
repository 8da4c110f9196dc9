"""A fleet of virtual oximeters with plausible physiology, for the demo, tests and load."""
