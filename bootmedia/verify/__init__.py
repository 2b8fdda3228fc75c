"""Check images in a repository: every manifest, map and chunk, and name what is damaged.

plan = plan_verify(repo, "golden")     # or image=None for every image; UsageError if unknown
result = verify_image(plan, reporter)  # result.ok; result.damaged lists image, area, offset
verify_repo(repo, "golden")            # the two in one call
"""

from bootmedia.verify.job import MAX_LISTED, Damage, VerifyResult, verify_image, verify_repo
from bootmedia.verify.plan import VerifyPlan, plan_verify

__all__ = [
    "MAX_LISTED",
    "Damage",
    "VerifyPlan",
    "VerifyResult",
    "plan_verify",
    "verify_image",
    "verify_repo",
]
