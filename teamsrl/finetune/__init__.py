"""Stage 3: DeepSpeed ZeRO supervised fine-tuning on the generated dataset (`teamsrl finetune`)."""
