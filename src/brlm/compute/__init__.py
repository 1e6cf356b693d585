"""The cost ledger: FLOPs (flops.py), device peaks (peak.py), memory (memory.py), prices (cost.py)
and scaling laws (scaling.py). Recorded in every run (`cost.json`) and predicted by `brlm estimate`.
"""
