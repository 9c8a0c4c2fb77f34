"""A cuML wheel that cannot load its CUDA libraries: the import itself fails."""
raise ImportError("libcuml++.so: cannot open shared object file: No such file or directory")
