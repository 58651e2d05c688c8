"""The seed articles' claims (``reference.articles``), one test per claim: each proof runs the code
the article describes and measures a verdict, which must be the one the claim records.

Nothing here is specific to a claim: a claim is data on its spec, and its proof lives beside it.
A claim without a proof fails."""

from __future__ import annotations

import pytest

import reference
from reference.spec import REFUTED, VERDICTS, Claim, Source

CLAIMS = [(name, claim) for name in reference.names() for claim in reference.get(name).claims]

# The losses issue 4 names: the seed articles' own losses and the built-ins whose examples they print.
ARTICLE_LOSSES = ("q_error", "binomial_deviance", "contrastive_loss", "gaussian_kernel_loss",
                  "batch_sum_squared_error", "l1_loss", "mse_loss", "nll_loss", "cross_entropy")


@pytest.mark.parametrize("name, claim", CLAIMS, ids=[f"{name}-{claim.key}" for name, claim in CLAIMS])
def test_claim(name, claim):
    assert claim.proof is not None, f"{name}: the claim {claim.claim!r} has no proof"
    verdict, evidence = claim.measure()
    assert verdict == claim.verdict, (f"{name} [{claim.key}] ({claim.source.title}): {claim.claim!r}: expected "
                                      f"{claim.verdict!r}, measured {verdict!r}: {evidence}")
    assert evidence, f"{name} [{claim.key}]: the proof gave no evidence"


def test_every_article_loss_has_claims():
    assert [n for n in ARTICLE_LOSSES if not reference.get(n).claims] == []


def test_a_claim_without_a_proof_is_measured_as_such_and_verdicts_are_checked():
    source = Source("-", "-", "-")
    assert Claim("x", source, "a claim", VERDICTS[0], None).measure()[0] == "no proof"
    assert Claim("x", source, "a claim", VERDICTS[0], lambda: 1 / 0).measure()[0].startswith("error: ")
    with pytest.raises(ValueError, match="verdict"):
        Claim("x", source, "a claim", "probably", None)


def test_the_reference_page_prints_the_claims_with_the_verdicts_measured_now():
    from reports import report
    spec = reference.get("batch_sum_squared_error")
    text = report.render(report.claims_blocks(spec), "text")
    assert "Claims from the articles" in text
    for claim in spec.claims:
        assert claim.claim in text and claim.source.title in text
    assert text.count(REFUTED) >= 2 and "DISAGREES" not in text  # recorded and measured, side by side
