"""Evaluation of a fine-tuned model and the run report.

    teamsrl evaluate --model runs/quickstart/finetune      # lm-eval tasks + membership attack
    teamsrl evaluate --model DIR --reference FILE          # + loss of human reference answers
    teamsrl report runs/quickstart                          # one Markdown page + PNG figures

`harness` runs lm-evaluation-harness (offline smoke tasks shipped in `tasks/`, or the real
benchmarks with a hub), `mia` the loss-based membership-inference attack, `reference` the loss
of human-written reference answers (fine-tuned vs base), `run` ties them to a fine-tune folder
and W&B, `report` draws the whole run, both arms side by side.
"""
