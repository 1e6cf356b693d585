"""Post-training library (Track 2): LoRA / QLoRA / full fine-tuning of any Hugging Face causal LM.

    data.py      instruction / chat / preference / raw-text examples -> token rows with targets,
                 response-only labels, packing with per-example position ids, counts of what was dropped
    model.py     base resolution (brlm run | HF folder | hub id), NF4 quantisation, PEFT LoRA,
                 adapters saved with a base fingerprint, merge
    loss.py      brlm's chunked head + cross-entropy on the HF model's final hidden states, and
                 per-sequence log-probabilities for DPO
    fit.py       the `brlm estimate` fit check before a model is loaded
    trainer.py   one loop for CPT, SFT and DPO: accumulation, checkpointing, cosine + warmup,
                 periodic eval / save, exact resume, metrics.jsonl, DDP
    evaluate.py  base-vs-adapted figures (perplexity, bits per byte, DPO reward accuracy)

The workflow over a run folder is brlm.stages.posttrain; the verb is `brlm finetune`.
transformers, peft and bitsandbytes are imported lazily (brlm.posttrain.deps) with an install hint.
"""
