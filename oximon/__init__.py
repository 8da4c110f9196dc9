"""The `oximon` command line and the local stack it runs for the demo and the tests."""
