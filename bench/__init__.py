"""Benchmarks (`make bench`): never part of `make test`. Each writes JSON and Markdown tables
under results/ and prints them."""
