"""rayops: Python code shared by the local cloud, the inventory plugin and the tests."""
