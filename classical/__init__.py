"""tinyqml.classical"""
