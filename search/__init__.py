"""tinyqml.search"""
