"""tinyqml.qml"""
