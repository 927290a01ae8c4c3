"""Named prior sets for the latent-expression (saturation) and exacerbation models.

Sources are in ``../shared/reference/literature.md`` (cited by its section labels, e.g. A3).
Every value here is either traced to a source there or labelled an assumption.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Receptor occupancy under natalizumab is bounded to [SATURATION_FLOOR, 1]: the study's
#: background claim that natalizumab binds 60-100% of alpha4-integrin.
SATURATION_FLOOR = 0.6
SATURATION_SPAN = 1.0 - SATURATION_FLOOR


def saturation_to_unit(saturation: float) -> float:
    """Map occupancy in [0.6, 1] to the unit interval the Beta prior lives on."""
    return (saturation - SATURATION_FLOOR) / SATURATION_SPAN


@dataclass(frozen=True)
class SaturationPriors:
    """Priors of the latent-expression model (see ``models.saturation``).

    Attributes
    ----------
    location_probit_sd
        ``location_probit[baseline_group, subset] ~ Normal(0, 1.5)``: probit of the median
        subject's positive rate; +-1.5 spans rates of about 7-93%, weakly informative
        (assumption).
    sigma_log_median, sigma_log_sd
        ``sigma ~ LogNormal(log 1.5, 0.5)``: spread of log CD49d within a gate, one for all
        subsets; flow cytometric surface markers span one to two decades (assumption). It
        converts the multiplicative loss of CD49d into probit units.
    tau_subject_sd, tau_subject_subset_sd
        ``tau ~ HalfNormal(0.5)`` in probit units: between-subject and subject x subset spread;
        0.5 probit is about 20 percentage points around 50% (assumption, weakly informative).
    saturation_mean_alpha, saturation_mean_beta
        Population mean occupancy on the unit scale of [0.6, 1]: ``Beta(6.75, 3.25)`` has mean
        0.675, i.e. occupancy 0.87: the SID trough mean of Foley 2019 (A3, 87.4%); its 95%
        interval (occupancy about 0.73-0.97) covers Oppermann's 75% (A4) and Derfuss' 91-95%
        medians (A2).
    saturation_concentration_log_median, saturation_concentration_log_sd
        ``concentration ~ LogNormal(log 10, 0.5)``: between-patient heterogeneity of occupancy;
        10 gives a between-patient SD of about 0.06 in occupancy, in line with the 80-100%
        range under 4-weekly dosing (A6); assumption.
    kappa_alpha, kappa_beta
        ``kappa ~ Beta(7, 3)`` (mean 0.7): fraction of detectable CD49d lost per unit occupancy.
        Wipfler 2011 reports a 62% fall of detectable alpha4 MFI on T cells at trough (B1, C);
        at occupancy 0.87 that is kappa = 0.62 / 0.87 = 0.71.
    saturation_assay_sd
        SD of a lab's measured occupancy around the true one (fixed, 0.05): assay noise of
        MFI-ratio methods; Oppermann's 95% CI of 72-78% for a median of 75% (A4); assumption.
    uniform_saturation
        If True, each patient's occupancy is Uniform(0.6, 1) with no hierarchy: the
        prior-sensitivity alternative to the literature-centred prior (the study's 60-100%).
    """

    location_probit_sd: float = 1.5
    sigma_log_median: float = 1.5
    sigma_log_sd: float = 0.5
    tau_subject_sd: float = 0.5
    tau_subject_subset_sd: float = 0.5
    saturation_mean_alpha: float = 6.75
    saturation_mean_beta: float = 3.25
    saturation_concentration_log_median: float = 10.0
    saturation_concentration_log_sd: float = 0.5
    kappa_alpha: float = 7.0
    kappa_beta: float = 3.0
    saturation_assay_sd: float = 0.05
    uniform_saturation: bool = False


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
