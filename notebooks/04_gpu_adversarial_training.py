# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · The full pipeline: AT, TRADES and MART, each with and without CAS
#
# Notebook 03 built the CAS module and trained one AT+CAS model. Here we run the paper's whole comparison:
# three adversarial-training methods, each **without and with CAS** — six models trained the same way and
# evaluated on the same test images with the same attacks.
#
# Section 1 says what each method optimises and why; section 7 closes the course with a summary.
#
# **Profiles.** A config cell picks one:
#
# * `cpu` (default, what the tests run): 8×8 digits, a small CNN, 6 short epochs, PGD-5 training attacks;
#   `best.pt` evaluated on 200 test images, with Square (a reduced budget) and the straight-through attack
#   on a class-balanced 100 of them. Finishes on a laptop in a few minutes.
# * `gpu`: CIFAR-10, ResNet-18 with CAS on both blocks of layer4, the official schedules (AT 200 epochs,
#   TRADES 100, MART 120); `best.pt` (chosen on the validation split) evaluated with the white-box attacks
#   on all 10,000 test images, and with Square, AutoAttack and the straight-through attacks on a seeded,
#   class-balanced 1,000 (the table prints the count beside every number). Set
#   `CAS_EDU_PROFILE=gpu` (and `CAS_EDU_DATA` to the folder holding CIFAR-10) before starting Jupyter.
#   That is many GPU-hours: train the runs with the command line first (the notebook prints the commands)
#   and the notebook reuses the finished checkpoints.
# * `colab`: CIFAR-10 and ResNet-18 sized for a free hosted GPU — AT and AT+CAS only, the `fast` one-cycle
#   schedule shortened to 10 epochs with PGD-5 training attacks, fp32; `best.pt` evaluated on 1,000 test images,
#   the costly attacks on a class-balanced 200. The cell after the config prints its estimated training time from
#   the FLOP count (an estimate, not a measurement).
#
# Any other profile name stops the configuration cell (the one after the Colab set-up cell) with an error that names the valid ones.

# %% [markdown] tags=["launch"]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/cas_edu/blob/main/notebooks/student/04_gpu_adversarial_training.ipynb) [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/OWNER/cas_edu/main?urlpath=lab/tree/notebooks/student/04_gpu_adversarial_training.ipynb)
#
# Run it online: Colab gives a free GPU (the set-up cell before the configuration installs cas_edu
# there), Binder JupyterLab on a CPU. Both badges open the student edition of this notebook.

# %% tags=["setup"]
# Set-up for Google Colab, written by `make links`: there it installs cas_edu when it is missing, picks the
# colab profile, turns widgets on and fetches the data this notebook needs. Anywhere else it does nothing.
import importlib
import importlib.util
import subprocess
import sys

if "google.colab" in sys.modules:
    if importlib.util.find_spec("cas_edu") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                        "cas_edu @ git+https://github.com/OWNER/cas_edu@main"], check=True)
        importlib.invalidate_caches()
    from cas_edu import hosted

    # To keep the runs on Google Drive, so that a new session resumes an interrupted training, uncomment:
    # from google.colab import drive; drive.mount("/content/drive")
    hosted.set_up_colab(datasets=("cifar10",))

# %%
import os

from cas_edu import hosted, presets

PROFILE = presets.get_profile(os.environ.get("CAS_EDU_PROFILE", "cpu")).name   # cpu (default), colab or gpu; ValueError for others
DATA_ROOT = os.environ.get("CAS_EDU_DATA")          # folder with CIFAR-10 for the gpu/colab profiles (nothing is downloaded)
DATASET = presets.get_profile(PROFILE).dataset      # digits (cpu) or cifar10 (gpu, colab)
EPS = None                  # None: the dataset's default L∞ budget (digits 0.1, CIFAR-10 8/255)
EPOCHS = None               # None: the profile's (cpu: 6; colab: 10; gpu: the paper's per method)
DEVICE = "auto"             # CUDA, then MPS, then CPU
SEED = 0
RUNS_DIR = hosted.runs_dir("runs")  # runs land in RUNS_DIR/<profile>/<method>[+cas]; on Colab with Drive mounted, on Drive

# %%
from cas_edu import data, evaluation, exercises, pipeline, plots, presets, runtime

profile = presets.get_profile(PROFILE)
device = runtime.resolve_device(DEVICE)
ds = data.load(DATASET, root=DATA_ROOT)
print(f"profile {profile.name}: {profile.description}")
if profile.name == "colab":  # an estimate from the FLOP count (presets.estimate_train_seconds), not a measurement
    seconds = sum(presets.estimate_train_seconds(c, presets.COLAB_T4_FP32_FLOPS)
                  for c in pipeline.suite_configs(profile, epochs=EPOCHS).values())
    print(f"estimated training time on a free-tier T4 in fp32 at 30 % of its peak: {seconds / 3600:.1f} h")
print(f"device: {device.type}; {ds.name}: train {len(ds.train)}, val {len(ds.val)}, test {len(ds.test)} images of shape {ds.input_shape}")

# %% [markdown]
# ## 1 · Three ways to train for robustness
#
# **AT** (Madry et al. 2018) trains on the worst case only: every batch is replaced by PGD examples and the model
# minimises the cross-entropy on them. It works, but the model never sees a clean image, and robustness and natural
# accuracy pull in different directions — adversarially trained models are usually less accurate on clean images.
#
# **TRADES** (Zhang et al. 2019) makes that **trade-off** explicit. It keeps the cross-entropy on the *natural* image,
# so the model stays accurate, and adds a regulariser asking the prediction not to change within the ε-ball: the KL
# divergence between the predicted distributions on $x$ and on $x'$, where the attack finds $x'$ by maximising that
# same KL. The weight $\beta_T$ (TRADES' $1/\lambda$) sets the balance: a larger $\beta_T$ buys robustness with
# natural accuracy.
#
# **MART** (Wang et al. 2020) starts from the observation that the training examples the model gets *wrong* matter
# most for robustness, and changes two things. Its **boosted cross-entropy** on $x'$ adds
# $-\log\big(1.0001 - \max_{k \ne y} p_k(x')\big)$ to the usual CE: besides raising the true class it pushes down the
# strongest wrong class, a larger margin. Its KL regulariser is weighted per example by $1 - p_y(x)$, the natural
# probability the model does *not* give the true class: misclassified and barely-right examples get more of the
# robustness term, confidently right ones almost none. $\beta_M$ weighs the regulariser.
#
# **CAS** is orthogonal to all three: the official code adds its auxiliary losses to each method's loss, in the
# method's own form. With $\mathrm{BCE}$ for MART's boosted CE, $p = \mathrm{softmax}$ of the main logits,
# $p_{\text{aux}_s}$ of the $s$-th auxiliary head's, $\beta_c$ CAS' β, means over the $S$ auxiliary heads and $(1/B)\sum_i$
# over the batch, each loss as the official code computes it (`cas_edu.losses`, tested term by term against
# `Trades/trades_reg.py` and `MART/mart_reg.py`):
#
# | method | training loss on a batch (x, y), x′ = the training attack's output | added with CAS (official code) |
# |---|---|---|
# | AT | $\mathrm{CE}(f(x'), y)$ | $+\ \beta_c\,\mathrm{mean}_s\,\mathrm{CE}(\text{aux}_s(x'), y)$ |
# | TRADES | $\mathrm{CE}(f(x), y) + \beta_T\,\frac{1}{B}\sum_i \mathrm{KL}\big(p(x_i)\,\Vert\,p(x'_i)\big)$ | $+\ \beta_c\,\mathrm{mean}_s\,\mathrm{CE}(\text{aux}_s(x), y) + \beta_T\beta_c\,\mathrm{mean}_s\,\frac{1}{B}\sum_i\mathrm{KL}\big(p_{\text{aux}_s}(x_i)\,\Vert\,p_{\text{aux}_s}(x'_i)\big)$ — the auxiliary CE is on the *natural* input |
# | MART | $\mathrm{BCE}(f(x'), y) + \beta_M\,\frac{1}{B}\sum_i \mathrm{KL}\big(p(x_i)\,\Vert\,p(x'_i)\big)\,\big(1 - p_{y_i}(x_i)\big)$ | $+\ \beta_c\,\mathrm{mean}_s\,\mathrm{BCE}(\text{aux}_s(x'), y) + \beta_M\beta_c\,\mathrm{mean}_s\,\frac{1}{B}\sum_i\mathrm{KL}\big(p_{\text{aux}_s}(x_i)\,\Vert\,p_{\text{aux}_s}(x'_i)\big)\,\big(1 - p_{y_i}(x_i)\big)$, with $p_y(x)$ the *main* head's probability (a quirk of the official code, kept) |
#
# The training attacks: AT uses PGD on the cross-entropy from a uniform random start in the ε-ball; TRADES uses PGD
# on the KL from $x + 0.001\,\mathcal{N}(0, 1)$; MART uses PGD on the cross-entropy from the same small Gaussian
# start. With CAS, every training attack also targets the auxiliary heads: the method's attack loss plus $\beta_c$
# times the mean of the same loss over the auxiliary heads. The next cell builds the configurations and prints the
# weights this profile uses.

# %%
configs = pipeline.suite_configs(profile, seed=SEED, device=DEVICE, epochs=EPOCHS, eps=EPS)
METHOD_BETAS = {"trades": "β_T (TRADES)", "mart": "β_M (MART)"}
print("; ".join([f"{label} = {configs[name].method_beta:g}" for name, label in METHOD_BETAS.items() if name in configs]
                + [f"β_c (CAS) = {configs['pgd_at+cas'].cas_beta:g}"]))
for name, config in configs.items():
    if not name.endswith("+cas"):
        print(f"{pipeline.display_name(name)}: training attack PGD-{config.attack_steps}, step {config.step_size:.4g}, "
              f"ε = {config.eps:.4g}; {config.epochs} epochs, weight decay {config.weight_decay:g}")

# %% [markdown]
# ## 2 · The runs, and how to train them outside the notebook
#
# `pipeline.suite_configs` built one training configuration per run: each method without and with CAS (the `colab`
# profile trains AT and AT+CAS only). Each run lives in
# `notebooks/runs/<profile>/<run>` (on Colab with Google Drive mounted, in `MyDrive/cas_edu/runs/<profile>/<run>`); a run that finished there with exactly the same configuration is
# **reused**, whether this notebook or the command line trained it. So on a GPU machine you can train in
# the background (e.g. under `nohup`, one command per run, `--resume` continues an interrupted run) and
# open the notebook when they are done. The commands, from the repository root:

# %%
for name, config in configs.items():
    out_dir = os.path.join(RUNS_DIR, profile.name, name)
    state = "finished, will be reused" if pipeline.is_finished(config, out_dir) else "to train"
    print(f"# {pipeline.display_name(name)}: {config.epochs} epochs, {state}")
    print(pipeline.cli_command(config, os.path.join("notebooks", out_dir)))  # an absolute RUNS_DIR stays as it is

# %% [markdown]
# ## 3 · Train (or reuse) them
#
# A progress bar per run; the validation accuracy under PGD-10 (adaptive objective for CAS models) is
# logged after every epoch. When nothing is reused, this is the notebook's slow cell.

# %%
suite = pipeline.run_suite(profile, RUNS_DIR, dataset=ds, seed=SEED, device=DEVICE, epochs=EPOCHS, data_root=DATA_ROOT,
                           progress=True)
print(suite.summary())

# %% [markdown]
# Training curves, one colour per method; CAS runs are dashed. Each run minimises a different loss (TRADES and MART
# add a KL term, a CAS run adds its auxiliary cross-entropies), so compare accuracies rather than losses across runs.
# The training accuracy of a CAS run can sit near 100 % from early on: it is measured in training mode, where every
# CAS mask is the *true* label's weight row, and the layers after the mask learn to read the label off it (notebook
# 03, section 2). It says nothing about robustness; compare the validation curves, measured in evaluation mode. The
# lines under the figure put the two side by side, the validation accuracy with its 95 % Wilson interval over the
# validation images (the training accuracy, an average over an epoch of a changing model, gets none).

# %%
histories = {pipeline.display_name(name): history for name, history in suite.histories.items()}
plots.training_curves_figure(histories, title=f"Training curves, {profile.name} profile ({ds.name}, {configs['pgd_at'].model})").show()
for name, history in suite.histories.items():
    later = history[1:] or history   # from the second epoch on
    train = [record["train_accuracy"] for record in later]
    n_val = min(suite.configs[name].val_examples, len(ds.val))   # the validation images behind the last number
    robust = evaluation.wilson_interval(round(history[-1]["val_robust_accuracy"] * n_val), n_val)
    print(f"{pipeline.display_name(name):>10}: training accuracy from epoch {later[0]['epoch']} on between "
          f"{min(train):.1%} and {max(train):.1%}; last epoch, validation PGD-10 {robust}")

# %% [markdown]
# ## 4 · Evaluate them all the same way
#
# Every model's `best.pt` (chosen on the validation split) meets the same test images and attacks: natural
# accuracy, FGSM, PGD-20, CW∞ (20 steps of the margin loss), the black-box Square attack, a
# **straight-through** PGD (100 steps × 5 restarts; for CAS models the backward pass goes through the
# softmax-weighted mask so that gradients can see the argmax that picks the mask — BPDA), and on the `gpu`
# profile AutoAttack, plain and straight-through. For CAS models every white-box attack runs twice — on the
# main head alone and with the adaptive objective (main + β · auxiliary losses), as notebook 03 explained;
# for models without CAS both columns hold the same attack. The table shows FGSM's main-head column only (the figure
# after it shows both, and the worst case counts both).
#
# The **worst case** column counts an image only if the model classifies it correctly naturally *and* under
# every attack — the per-example worst case, the number to quote. (Taking the lowest column instead would
# overstate robustness: two attacks can break different images.) On the `cpu` profile the budget is
# reduced — 200 test images (one image = half a point), the costly attacks on a class-balanced 100 of them,
# 500 Square queries instead of 5,000; the first row of the table gives the count of every column, and every accuracy
# comes with its 95 % Wilson interval in brackets, over that column's images (notebook 01).

# %%
eps = configs["pgd_at"].eps
reports = pipeline.evaluate_suite(suite, ds, eps, device=DEVICE, seed=SEED, progress=True)
print(f"accuracy in % of best.pt, L∞ ε = {eps:.4g}; Square with {profile.square_queries} queries")
print(pipeline.results_table(reports))

# %%
plots.robustness_comparison_figure({pipeline.display_name(k): r for k, r in reports.items()},
                                   title=f"Accuracy under each attack ({profile.name} profile, ε = {eps:.3g}, "
                                         f"{next(iter(reports.values())).n_examples} test images)").show()

# %%
intervals = pipeline.cas_gain_intervals(reports)  # paired: both models saw the same images
main_head = {pipeline.display_name(name): evaluation.paired_difference(reports[f"{name}+cas"], reports[name], "pgd20",
                                                                       objective="ce")
             for name in reports if not name.endswith("+cas") and f"{name}+cas" in reports}
for method, change in intervals.items():
    verdict = ("CAS helps here" if change.low > 0 else "CAS hurts here" if change.high < 0
               else "no resolved difference")
    print(f"{method:>7}: CAS changes main-head PGD-20 by {main_head[method]}")
    print(f"{'':>7}  and the worst case by {change} -> {verdict}")
for name, report in reports.items():
    for warning in report.warnings:
        print(f"{pipeline.display_name(name)}: {warning}")


# %% [markdown]
# **How to read these lines.** Each change comes with a paired 95 % interval: both models were evaluated on the same
# images, so the interval counts the images on which exactly one of the two is right. An interval that contains 0
# means the data cannot tell whether CAS helps on this problem — say exactly that, not "CAS adds x points". Then
# compare the main-head change with the worst-case change: where the main head credits CAS with more than the worst
# case does, the attack that ignores the auxiliary heads is being fooled by the argmax mask (notebook 03's pitfall);
# the table above shows which columns found the extra errors. A warning under the lines, where one is printed, names
# two attacks that disagree the wrong way — one found errors the other should have found too: a sign of gradient
# masking or of too weak an attack (notebook 03, section 5.2, lists the checks). The adaptive attack beating the
# main-head one is expected and gives no warning. Whether CAS helps at the paper's scale (CIFAR-10, ResNet-18) is what
# the `gpu` profile measures — with these same columns. Re-running on another machine changes the numbers (training is
# not bit-for-bit reproducible across machines), and the intervals cover the test images, not the training run.

# %% [markdown]
# ## 5 · On a GPU
#
# Switch `PROFILE` to `"gpu"` (or start Jupyter with `CAS_EDU_PROFILE=gpu`, and `CAS_EDU_DATA` pointing
# at a folder with CIFAR-10; this notebook never downloads). Nothing else changes: `DEVICE = "auto"` picks
# the GPU, the same library calls train ResNet-18 with the official settings and run the full evaluation.
# The official schedules add up to 840 training epochs for the six runs (AT 200, TRADES 100, MART 120, each with
# and without CAS), many GPU-hours, so train them with the printed commands first (`--resume` continues after an
# interruption); if memory runs out, lower `--batch-size`.
#
# What to compare with: the CAS paper reports, for ResNet-18 on CIFAR-10, that CAS improves the robustness of AT,
# TRADES and MART under its own white-box evaluation (FGSM, PGD-20 and CW∞ with the adaptive objective), with no
# black-box or AutoAttack check. We quote no numbers we have not verified; the `gpu` profile's `worst case` column,
# with its paired intervals, is the number to set against the paper's claim.
#
# ## 6 · Exercises
#
# ### Exercise 1 — the effect of CAS in one number per method
# Write `my_cas_gains(reports)` returning, for each method label (`"AT"`, `"TRADES"`, `"MART"`), the
# worst-case accuracy with CAS minus without, in percentage points (`pipeline.worst_case(report)` gives a
# report's worst case as a fraction). The checker compares with the table.

# %%
def my_cas_gains(reports):
    # your code here: pair each run with its "+cas" twin
    return {}


exercises.check_cas_gains(my_cas_gains, reports);


# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution: worst case with CAS minus without, in points, keyed by the method's label.
def my_cas_gains(reports):
    gains = {}
    for name, report in reports.items():
        if not name.endswith("+cas") and name + "+cas" in reports:
            with_cas = pipeline.worst_case(reports[name + "+cas"])
            gains[pipeline.display_name(name)] = round(100 * (with_cas - pipeline.worst_case(report)), 1)
    return gains


exercises.check_cas_gains(my_cas_gains, reports);

# %% [markdown]
# ### Exercise 2 — main head vs worst case
# Compare the `PGD-20 main head` and `worst case` columns of the CAS models with those of the models
# without CAS. For which models is the gap largest, and what does that tell you about citing main-head
# numbers for CAS?

# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution: the main-head PGD-20 minus the worst case, both on the images every attack ran on (a paired interval:
# the same images, and every image the worst case keeps also survives the main-head attack).
for name, report in reports.items():
    examples, survived = report.worst_case_correct()
    main_head = report.correct["pgd20"]["ce"][examples]   # PGD-20 ran on every test image
    main_ci, worst_ci = evaluation.wilson_interval(main_head).format(show_n=False), evaluation.wilson_interval(survived)
    print(f"{pipeline.display_name(name):>10}: main-head PGD-20 {main_ci}, worst case {worst_ci}, "
          f"gap {evaluation.paired_interval(main_head, survived)}")

# %% [markdown] jupyter={"source_hidden": true} tags=["solution"]
# **Solution.** Without CAS the main-head PGD-20 is the model's own white-box attack; the gap to the worst case is
# what the other attacks (Square, the PGD-100 × 5 restarts) add. With CAS the main-head attack cannot see the argmax
# that picks the mask, so it can overstate robustness by more: compare each CAS model's gap with its twin's in the
# lines above. Quote the worst case (or at least the adaptive attack *and* a black-box check), never the main-head
# number alone.

# %% [markdown]
# ### Exercise 3 — more training
# The `cpu` profile trains only 6 epochs. Set `EPOCHS = 12` in the config cell and re-run the notebook
# (training takes about twice as long). Do natural accuracy, worst-case accuracy and the CAS gains change? Which of
# the changes are larger than the sampling noise — what do the intervals printed in section 4 say?

# %% [markdown] jupyter={"source_hidden": true} tags=["solution"]
# **Solution.** Measure it: keep the reports of the 6-epoch runs (`before = reports`) and re-run with 12 epochs. Both
# evaluations use the same test images and attack seeds, so a model's change is a paired comparison:
# `evaluation.paired_difference(reports["pgd_at"], before["pgd_at"])` gives the change of AT's worst case with its
# 95 % interval (pass an attack, e.g. `"natural"`, for another column), and it counts only when that interval
# excludes 0. A single accuracy's interval is `report.interval(attack)` or `report.worst_case_interval` — what the
# table prints in brackets — and `evaluation.wilson_interval(correct)` for any per-example results. The width of an
# interval depends on how many images it rests on — the worst case here rests on the costly attacks' subset (the
# table's first row gives the count) — so read it off the printed intervals rather than guessing a "± points". A
# change in a CAS gain is harder to call: compare `pipeline.cas_gain_intervals` before and after, and only
# intervals that do not overlap mark a clear change. And remember that a second training seed would move the numbers
# too: the intervals do not cover that.

# %% [markdown]
# ## 7 · What this course showed
#
# * **A robustness number needs its threat model** (notebook 01): who attacks (white-box, moving second, untargeted
#   or targeted), with what budget (here L∞, ε chosen per dataset). Accuracy under an attack is only an *upper bound*
#   on robust accuracy; certification gives lower bounds.
# * **FGSM and PGD** (notebook 01) are the basic attacks: one step along the gradient's sign, or many projected steps.
#   Attacks run the deployed model, in evaluation mode.
# * **The paper's observations** (notebook 02) — adversarial examples activate channels more strongly and more
#   uniformly — are measurable quantities with intervals and a null (random sign noise); whether they hold depends on
#   the layer (a saturated layer cannot show quiet channels), the data and the model. The verdicts printed there are
#   this run's, not the paper's.
# * **CAS** (notebook 03) is an auxiliary classifier per CAS layer whose weight row for a class masks the channels:
#   by the true label in training (which is why a CAS model's training accuracy says little), by the auxiliary
#   prediction at test time. Whether it reduces the channels an attack wakes is again a measured statement.
# * **Evaluating a defence is the hard part** (notebook 03): an argmax mask, like input quantisation, gives shattered
#   gradients, and an attack that cannot see through it overstates robustness. The checks: an adaptive objective, a
#   black-box attack, an attack through the non-differentiable step (BPDA / straight-through), AutoAttack, a sanity
#   check at a huge ε — and the per-example worst case over all of them, with an interval.
# * **Comparing methods** (this notebook): AT, TRADES and MART with and without CAS, trained the same way and
#   evaluated on the same images; a difference is a claim only when its paired interval excludes 0, and one training
#   seed is one seed. Section 4 printed, for this run, whether CAS helped each method.
#
# Where to go next: run the `gpu` profile to test the paper's claims in its own setting, read Carlini et al. (2019)
# and Tramèr et al. (2020) before evaluating a defence of your own, and use AutoAttack (Croce & Hein 2020) as the
# baseline any new defence must survive.

# %% [markdown]
# ## References
#
# * Y. Bai, Y. Zeng, Y. Jiang, S.-T. Xia, X. Ma, Y. Wang. *Improving Adversarial Robustness via Channel-wise
#   Activation Suppressing.* ICLR 2021. arXiv:2103.08307. Official code: github.com/bymavis/CAS_ICLR2021
#   (`Trades/trades_reg.py` and `MART/mart_reg.py` for the losses above).
# * A. Madry, A. Makelov, L. Schmidt, D. Tsipras, A. Vladu. *Towards Deep Learning Models Resistant to Adversarial
#   Attacks.* ICLR 2018 (PGD, adversarial training).
# * H. Zhang, Y. Yu, J. Jiao, E. P. Xing, L. El Ghaoui, M. I. Jordan. *Theoretically Principled Trade-off between
#   Robustness and Accuracy.* ICML 2019 (TRADES).
# * Y. Wang, D. Zou, J. Yi, J. Bailey, X. Ma, Q. Gu. *Improving Adversarial Robustness Requires Revisiting
#   Misclassified Examples.* ICLR 2020 (MART).
# * A. Athalye, N. Carlini, D. Wagner. *Obfuscated Gradients Give a False Sense of Security: Circumventing Defenses to
#   Adversarial Examples.* ICML 2018 (gradient masking, BPDA).
# * N. Carlini, A. Athalye, N. Papernot, W. Brendel, J. Rauber, D. Tsipras, I. Goodfellow, A. Madry, A. Kurakin.
#   *On Evaluating Adversarial Robustness.* arXiv:1902.06705, 2019.
# * F. Tramèr, N. Carlini, W. Brendel, A. Madry. *On Adaptive Attacks to Adversarial Example Defenses.* NeurIPS 2020.
# * F. Croce, M. Hein. *Reliable Evaluation of Adversarial Robustness with an Ensemble of Diverse Parameter-free
#   Attacks.* ICML 2020 (AutoAttack).
# * N. Carlini, D. Wagner. *Towards Evaluating the Robustness of Neural Networks.* IEEE S&P 2017 (the CW margin loss).
# * M. Andriushchenko, F. Croce, N. Flammarion, M. Hein. *Square Attack: a Query-efficient Black-box Adversarial
#   Attack via Random Search.* ECCV 2020.
