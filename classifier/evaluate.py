"""One message from bytes to verdict: checks, facts, the recipient's policy and its decision.

The command line, the pipe transport and the watcher all go through
`evaluate`, so a message gets the same verdict whichever way it comes in.
"""

from __future__ import annotations

from dataclasses import dataclass

from classifier.auth.checks import CheckReport, facts_from, run_checks
from classifier.auth.facts import AuthFacts, render_header_value
from classifier.config import Settings
from classifier.envelope.trust import Hints
from classifier.lookup.resolver import Resolver
from classifier.policy.rules import Policies, Policy, load_policies
from classifier.policy.verdict import Verdict, decide


@dataclass(frozen=True)
class Evaluation:
    """Everything known about one message, and what to do with it."""

    report: CheckReport
    facts: AuthFacts
    policy: Policy
    verdict: Verdict

    def header_value(self, authserv_id: str) -> str:
        """Gives the X-Authsieve value for this evaluation."""
        return render_header_value(
            self.facts,
            authserv_id,
            self.verdict.action,
            self.policy.mode,
            "; ".join(self.verdict.reasons),
            allowed=bool(self.verdict.allowed),
            user=self.policy.user,
        )

    def to_dict(self) -> dict[str, object]:
        return {**self.report.to_dict(), "verdict": self.verdict.to_dict()}


def evaluate(
    data: bytes,
    settings: Settings,
    resolver: Resolver,
    hints: Hints | None = None,
    user: str | None = None,
    policies: Policies | None = None,
) -> Evaluation:
    """Gives the evaluation of one message for `user` (default: the recipient it was sent to).

    The policy's trusted_forwarders join [classifier].trusted_forwarders for
    the trust path; when the user is not known in advance, the global
    policy's list is used and the recipient's policy decides.
    """
    policies = policies or load_policies(settings)
    known = policies.for_user(user) if user else None
    forwarders = (known or policies.default).trusted_forwarders
    report = run_checks(data, settings.with_forwarders(forwarders), resolver, hints)
    policy = known or policies.for_user(report.envelope.rcpt or "")
    facts = facts_from(report, policy.trusted_arc_sealers)
    return Evaluation(report, facts, policy, decide(facts, policy))
