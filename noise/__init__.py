"""tinyqml.noise"""
