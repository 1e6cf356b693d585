"""The cost ledger: FLOPs (flops.py), device peaks (peak.py), memory (memory.py), prices (cost.py)
and scaling laws (scaling.py). Recorded in every run (`cost.json`) and predicted by `brlm estimate`.

Nothing here knows an architecture: each family file in brlm/models/ owns its parameter, FLOPs,
activation and LoRA-target counts, and compute looks them up with brlm.models.registry.family(arch).
"""
