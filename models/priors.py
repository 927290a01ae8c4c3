"""Named prior sets for the latent-expression (saturation) and exacerbation models.

Sources are in ``../shared/reference/literature.md`` (cited by its section labels, e.g. A3).
Every value here is either traced to a source there or labelled an assumption.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The ``treated_offset`` prior set's SD of the treated patients' baseline offset (probit).
TREATED_OFFSET_SD = 0.3
#: Receptor occupancy under natalizumab is bounded to [SATURATION_FLOOR, 1]: the study's
#: background claim that natalizumab binds 60-100% of alpha4-integrin.
SATURATION_FLOOR = 0.6
SATURATION_SPAN = 1.0 - SATURATION_FLOOR


@dataclass(frozen=True)
class SaturationPriors:
    """Priors of the latent-expression model (see ``models.saturation``).

    Attributes
    ----------
    location_probit_sd
        ``location_probit[baseline_group, subset] ~ Normal(0, 1.5)``: probit of the median
        subject's positive rate; +-1.5 spans rates of about 7-93%, weakly informative
        (assumption).
    tau_subject_sd, tau_subject_subset_sd
        ``tau ~ HalfNormal(0.5)`` in probit units: between-subject and subject x subset spread;
        0.5 probit is about 20 percentage points around 50% (assumption, weakly informative).
    tau_visit_sd
        ``tau_visit ~ HalfNormal(0.25)`` in probit units, only for cohorts with repeated samples
        of a patient: the sample x subset (visit) spread, half the between-subject scale because
        within-person variation of lymphocyte subset frequencies is smaller than between-person
        variation (``simulations/configs/visit_variation.md``; assumption).
    saturation_logit_mean_mu, saturation_logit_mean_sd
        A patient's occupancy is ``0.6 + 0.4 logistic(mu + omega z)``, ``z ~ N(0, 1)``;
        ``mu ~ Normal(0.92, 0.77)`` gives the population mean occupancy a prior median of 0.877
        and 95% interval 0.75-0.96: Foley 2019's SID trough mean of 87.4% (A3), covering
        Oppermann's 75% (A4) and Derfuss' 91-95% medians (A2). Chosen
        (``scripts/calibrate_saturation_priors.py``) to match the quantiles of the earlier
        ``Beta(6.75, 3.25)`` prior of the mean.
    saturation_logit_sd_log_median, saturation_logit_sd_log_sd
        ``omega ~ LogNormal(log 0.76, 0.2)``: between-patient spread of occupancy, a prior median
        SD of 0.057 in occupancy (95% interval 0.025-0.084), in line with the 80-100% range
        under 4-weekly dosing (A6); matched to the earlier Beta concentration
        ``LogNormal(log 10, 0.5)`` (assumption). Non-centred because the data say little about a
        single patient's occupancy: the centred Beta hierarchy mixed badly (R-hat 1.03 at 4x
        the study size).
    kappa_alpha, kappa_beta
        ``kappa ~ Beta(7, 3)`` (mean 0.7): fraction of detectable CD49d lost per unit occupancy.
        Wipfler 2011 reports a 62% fall of detectable alpha4 MFI on T cells at trough (B1, C);
        at occupancy 0.87 that is kappa = 0.62 / 0.87 = 0.71.
    kappa_logit_mean_mu, kappa_logit_mean_sd, kappa_logit_sd_sd
        One kappa per subset (``saturation_per_subset``): ``logit kappa_s = mu + omega z_s``,
        ``mu ~ Normal(0.96, 0.49)``, ``omega ~ HalfNormal(0.5)``, ``z_s ~ N(0, 1)``. Each
        kappa_s then has the quantiles of ``Beta(7, 3)`` (2.5%, 50%, 97.5%: 0.39, 0.72, 0.91
        against 0.40, 0.71, 0.92), and two subsets' kappas differ with SD 0.13 (independent
        ``Beta(7, 3)``: 0.20); a shared kappa is ``omega = 0``
        (``scripts/calibrate_saturation_priors.py``). Independent Beta priors left the common
        level of the kappas, which positive rates inform through the priors alone, on a ridge:
        bulk ESS about 330 of 4000 draws at 4x the study size.
    mean_shift_log_median, mean_shift_log_sd
        ``delta ~ LogNormal(-0.46, 0.62)``: the loss of probit location of treated patients
        averaged over the occupancy distribution, ``delta = -E log(1 - kappa rho) / sigma``
        (reference subset when kappa is per subset); prior median 0.63, 95% interval 0.18-2.07.
        The data identify delta; ``sigma`` (the SD of log CD49d within a gate) follows as
        ``-E log(1 - kappa rho) / delta``. Matched to the shift implied by the earlier
        ``sigma ~ LogNormal(log 1.5, 0.5)`` (flow-cytometric surface markers span one to two
        decades; assumption) with the kappa and occupancy priors
        (``scripts/calibrate_saturation_priors.py``). Sampling delta rather than sigma removes
        the kappa-sigma ridge along which the positive rates are flat (bulk ESS about 240 of
        4000 draws at 10x the study size).
    saturation_assay_sd
        SD of a lab's measured occupancy around the true one (fixed, 0.05): assay noise of
        MFI-ratio methods; Oppermann's 95% CI of 72-78% for a median of 75% (A4); assumption.
    uniform_saturation
        If True, each patient's occupancy is Uniform(0.6, 1) with no hierarchy: the
        prior-sensitivity alternative to the literature-centred prior (the study's 60-100%).
    sigma_per_subset
        If True, the SD of log CD49d within a gate is one per subset: each subset has its own
        mean probit shift ``delta_s`` (the prior of ``delta`` above, independently), and
        ``sigma_s = -E log(1 - kappa_s rho) / delta_s``. The default's single sigma is an
        assumption (no measurement of the spread per subset is at hand); it is what lets
        positive rates tell per-subset kappas apart. Under this variant a per-subset kappa fits
        the rates exactly as well, so ``kappa_difference`` comes from the priors (the prior set
        ``per_subset_sigma``, a sensitivity analysis).
    mfi_log_sd_sd
        ``mfi_log_sd ~ HalfNormal(0.2)``: the SD of a row's ``log(mfi_cd49d / mfi_gate)`` around
        the subset's median log CD49d relative to its gate (``sigma_s`` times the row's probit),
        only for cohorts with MFI columns. Within one laboratory and instrument, replicate
        cellular fluorescence intensities varied with CVs of 3.0-9.9% (log SDs 0.03-0.10), and
        across 34 laboratories with CVs of 20-34% (Vogt et al. 1991, Cytometry 12:525-536).
        The scale 0.2 puts the within-lab values in the prior's bulk (median 0.13) and still
        allows errors of the between-lab size (97.5% quantile 0.45), which also covers a
        subset whose CD49d is not log-normal within its gate (so that its median and its
        positive rate disagree under the model).
    sigma_measured, sigma_log_median, sigma_log_sd
        Set for cohorts with MFI (``models.saturation.spread_for_measurements``, never by a
        prior set): the model then samples ``sigma_s ~ LogNormal(log 1.5, 0.5)`` per subset and
        derives ``delta_s``. Flow-cytometric surface markers span one to two decades, a
        log-scale SD of about 1-2 (assumption; the prior the ``delta`` prior above was matched
        to). The MFI pins each sigma_s down (posterior SD about 0.02 on a simulated cohort of
        the study's design, ``analysis/mfi_comparison.py``); sampling delta_s instead left
        sigma_s a narrow curved ridge in (delta_s, kappa, occupancy) that failed the gate.
    treated_offset_sd
        SD of ``treated_offset ~ Normal(0, sd)``, a baseline offset (probit units, the same in
        every subset) of the treated patients' location from the MS_naive one. 0 (the default,
        no offset) is the untestable no-confounding assumption that treated patients would sit
        where natalizumab-naive ones do without the drug; natalizumab is given for active
        disease, so they may not. The prior set ``treated_offset`` uses 0.3 probit (about 12
        percentage points at a 50% rate; assumption: a group difference of the size the study
        could not have ruled out), a sensitivity analysis. One offset for all subsets: a
        confounder such as disease activity shifting every CD4 subset alike. An offset per
        subset would absorb each subset's drug shift, as ``sigma_per_subset`` does, and sampled
        badly on the bundled cohort (divergent transitions at target acceptance 0.97, failing
        the gate, with 1 of 2 seeds on the diagonal mass matrix and 1 of 2 on nutpie's
        low-rank one; one offset for all subsets passed with 3 of 3).
    """

    location_probit_sd: float = 1.5
    tau_subject_sd: float = 0.5
    tau_subject_subset_sd: float = 0.5
    tau_visit_sd: float = 0.25
    saturation_logit_mean_mu: float = 0.92
    saturation_logit_mean_sd: float = 0.77
    saturation_logit_sd_log_median: float = 0.76
    saturation_logit_sd_log_sd: float = 0.2
    kappa_alpha: float = 7.0
    kappa_beta: float = 3.0
    kappa_logit_mean_mu: float = 0.96
    kappa_logit_mean_sd: float = 0.49
    kappa_logit_sd_sd: float = 0.5
    mean_shift_log_median: float = float(np.exp(-0.46))
    mean_shift_log_sd: float = 0.62
    saturation_assay_sd: float = 0.05
    uniform_saturation: bool = False
    sigma_per_subset: bool = False
    treated_offset_sd: float = 0.0
    mfi_log_sd_sd: float = 0.2
    sigma_measured: bool = False
    sigma_log_median: float = 1.5
    sigma_log_sd: float = 0.5


@dataclass(frozen=True)
class ExacerbationPriors:
    """Priors of the exacerbation model (see ``models.exacerbation``).

    Attributes
    ----------
    intercept_mean, intercept_sd
        ``intercept ~ Normal(-1, 1.5)``: log-odds of an exacerbation during follow-up at the
        cohort-average CD49d ratio; centred on about 27% with a 95% interval of about 5-90%:
        weakly informative (assumption; the study saw 2 of 8).
    slope_sd
        ``slope ~ Normal(0, 1)``: log odds ratio per SD of the latent log CD49d ratio; odds
        ratios beyond 7 per SD are a priori unlikely (assumption).
    """

    intercept_mean: float = -1.0
    intercept_sd: float = 1.5
    slope_sd: float = 1.0
