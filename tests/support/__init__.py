"""Test helpers shared by the suite: servers on free ports, project copies, tiny weight files, the
import graph, the CLI runner and the emulated CUDA device."""
