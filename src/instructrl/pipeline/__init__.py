"""``instructrl run``: the whole InstructGPT loop from one config, with simulated labelers.

Steps (each writes ``run.out_dir/<step>/``)::

    base            (model: tiny only) build the tiny test model
    curate          prompts -> train/test split by user (instructrl curate); the train prompts are
                    divided into SFT, RM and PPO prompts -> curate/prompts/{sft,rm,ppo,test}.jsonl
    demo_samples    N samples of the base model per SFT prompt without a reference answer
    demonstrations  the training panel picks each SFT prompt's demonstration (reference, else best of
                    N; instructrl label) + the labeler-written demonstrations -> sft_data.jsonl
    sft             supervised fine-tuning of the base model (instructrl sft)
    samples         K samples of the SFT model per RM prompt
    rankings        the training panel ranks them (instructrl label; panels.json holds both panels)
    rm              reward model from the rankings, normalized on the demonstrations (instructrl rm)
    ppo             PPO of the SFT policy against the RM (instructrl ppo; ptx.coef = 0, the held-out
                    pretraining loss still measured)
    ppo_ptx         the same with the pretraining term (ptx.coef = gamma)
    eval            base, base with a few-shot prefix, SFT, PPO, PPO-ptx on the test prompts,
                    judged by the held-out panel (instructrl.eval.run)
    suite           the automatic evaluations (TruthfulQA, HellaSwag, RealToxicityPrompts, GSM8K;
                    instructrl.eval.tasks) of base, SFT, PPO and PPO-ptx on samples of the public data
                    sets; it follows ppo_ptx, not eval, so a change to one evaluation keeps the other
    report          report.md, report.html and figures (instructrl.eval.report)

Modules: ``config`` (PipelineConfig and its sections), ``steps`` (each stage's config built from its
section, and the steps' own data work), ``engine`` (skip, resume and redo by fingerprint; knows no
stage) and ``run`` (the entry point, ``instructrl.pipeline.run:run``).
"""
