"""MS-MGANs v3 design study: the paper's three ideas in the forms that have worked elsewhere,
screened one change at a time on the design slice (issue 36).

Run:  python -m msmgan_jax.compare --config configs/compare_lowdata_v3_design.py
      (resumable; --report rewrites the tables from the finished runs)
Every candidate trains the resnet8 student on `train[:10%]` exactly as
configs/compare_lowdata_v2.py does (the same full-data resnet20 teacher and its anchors at
epochs 5/10/15, budget and base config) with 2 seeds, scored on `train[20%:60%]` (24,000
images): disjoint from the students' slice and from the comparison's tuning slice
`train[60%:]`; never the test split. (The teacher trained on all of the training split, so
it has seen these images; every candidate and baseline shares that teacher.)
Candidate 0 is v2's MS-MGANs (the v2 design study's choice, `method_defaults` of
configs/compare_lowdata_v2.py); every later candidate changes one thing of candidate 0:
1. starts: the student's weights selected from the final anchor (`student.init=last_anchor`,
   the teacher at test accuracy 0.943) instead of the first (epoch 5, 0.897);
2. stages: a progressive schedule with most of the budget on the final anchor
   (`stages.stage_shares=(0.1, 0.1, 0.8)` against (0.2, 0.2, 0.6); the field is
   `student.stage_shares` now, its old name kept as the runs recorded it);
3. the head's logit loss: DKD's TCKD + NCKD (`msmgan.loss=dkd`, dkd's own alpha 1, beta 8,
   warmup 1.25 epochs) in place of the KL;
4. the head's logit loss standardised (`msmgan.logit_std=True` with logit standardisation's
   own base temperature, `msmgan.tau=2.0`; Sun et al. CVPR 2024);
5. CTKD's adversarial temperature on the head's KL (`msmgan.ctkd=True`, CTKD's own settings:
   tau = 1 + 20 sigmoid(w), w through a gradient reversal on a 0.625-epoch cosine; Li et al.
   AAAI 2023);
6. a discriminator on the last feature map for each whole head phase (`msmgan.head_disc=0.1`:
   least squares, Adam 1e-4, R1 1.0, weight ramped in over an epoch), beside today's
   per-block discriminators.
7. the two that paid, together: the progressive schedule of 2 with CTKD's temperature of 5;
8. stages: the anchors as one snapshot-ensemble target in every head phase (the average of
   their softened outputs at msmgan.tau; CheckpointKD, Wang et al. NeurIPS 2022), in place of
   each stage's anchor (`msmgan.target=ensemble`; it replaces the mutual copy, whose target
   an ensemble has no copy of: `mutual.enabled=False`);
9. blocks: teacher forcing (`stages.teacher_forced=True`: each greedy block phase feeds its
   block the anchor's previous block map, LIT's idea, Koratana et al. ICML 2019);
10. adversarial: the last-map discriminator of 6 in place of the per-block ones (block phases
   regress features only: `gan.alpha_adv=0`, `gan.alpha_task=0`);
11. the two best so far, together: the progressive schedule of 2 with teacher forcing of 9;
12. teacher forcing in every stage's block phases (`stages.block_stages=-1`; v2 has them in
   the first stage only);
13. teacher forcing without the per-block discriminators (`gan.alpha_adv=0`,
   `gan.alpha_task=0`: the forced blocks regress the anchor's maps only, as LIT's sections do).
14. blocks alongside end-to-end KD, LIT's joint form: no greedy block phase, every stage's
   head phase adds each block's teacher-forced feature MSE at the block phases' weight
   (`stages.block_stages=0; stages.forced_joint=1.0`: block k fed the anchor's block k-1
   map, regressed onto its block k map, trained with the head's logit loss; Koratana et al.
   ICML 2019);
15. the joint form of 14 after the teacher-forced greedy block phases of 9
   (`stages.teacher_forced=True; stages.forced_joint=1.0`).
16. the joint form of 14 (which has no block phase, so no per-block discriminator) with the
   adversarial idea kept where it reads the whole student: the last-map discriminator of 6
   in every head phase (`msmgan.head_disc=0.1`).
17. the joint form of 14 without mutual learning (`mutual.enabled=False`: the head distils
   from the frozen anchor), the best MS-MGANs variant of v3b's ablations (its no_mutual).
18. the joint form of 14 with the head's logit loss DKD on standardised logits
   (`msmgan.loss=dkd; msmgan.logit_std=True; msmgan.tau=2.0`), dkd_ls's loss, v3's best
   baseline at 15 epochs.
   17 and 18 were proposed from v3b's test-split rows; they are scored here, on the design
   slice, like every other candidate, but where the idea came from is the test split.
Candidates 0-16 are the ones configs/compare_lowdata_v3b.py chooses from.
A later candidate is appended; a finished candidate keeps its number.
Results: results/lowdata_v3_design/compare.{json,md}.
"""
from configs import compare_lowdata_v2, compare_lowdata_v2_design
from msmgan_jax import config as config_lib

V2 = compare_lowdata_v2.design_choice()  # v2's MS-MGANs: its design study's choice.


def get_config(arg=None):
  """v2's design study (same slices, seeds and budget) with v3's candidates."""
  if arg not in (None, ''):
    raise config_lib.ConfigError(f'unknown config argument {arg!r}: use nothing')
  c = compare_lowdata_v2_design.get_config()
  c.title = 'lowdata v3 design study: MS-MGANs v3 candidates on the design slice'
  c.config_path = 'configs/compare_lowdata_v3_design.py'
  c.workdir, c.out = 'runs/design_lowdata_v3', 'results/lowdata_v3_design'
  c.method_defaults = {'msmgan': V2}  # candidate 0: v2's MS-MGANs.
  c.design_note = ('Candidates of MS-MGANs only, 2 seeds each, scored on this study\'s own '
                   'validation slice (the design slice); candidate 0 is v2\'s MS-MGANs, each '
                   'later one changes one thing of it (see configs/compare_lowdata_v3_design.py). '
                   '"chosen": the best mean validation accuracy (ties: the earlier).')
  c.tuning.msmgan = (
      '',
      'student.init=last_anchor',
      'stages.stage_shares=(0.1, 0.1, 0.8)',
      'msmgan.loss=dkd',
      'msmgan.logit_std=True; msmgan.tau=2.0',
      'msmgan.ctkd=True',
      'msmgan.head_disc=0.1',
      'stages.stage_shares=(0.1, 0.1, 0.8); msmgan.ctkd=True',
      'msmgan.target=ensemble; mutual.enabled=False',
      'stages.teacher_forced=True',
      'msmgan.head_disc=0.1; gan.alpha_adv=0.0; gan.alpha_task=0.0',
      'stages.stage_shares=(0.1, 0.1, 0.8); stages.teacher_forced=True',
      'stages.teacher_forced=True; stages.block_stages=-1',
      'stages.teacher_forced=True; gan.alpha_adv=0.0; gan.alpha_task=0.0',
      'stages.block_stages=0; stages.forced_joint=1.0',
      'stages.teacher_forced=True; stages.forced_joint=1.0',
      'stages.block_stages=0; stages.forced_joint=1.0; msmgan.head_disc=0.1',
      'stages.block_stages=0; stages.forced_joint=1.0; mutual.enabled=False',
      ('stages.block_stages=0; stages.forced_joint=1.0; msmgan.loss=dkd; msmgan.logit_std=True; '
       'msmgan.tau=2.0'),
  )
  return c
