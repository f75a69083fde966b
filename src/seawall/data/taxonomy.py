"""One hazard taxonomy for every dataset: the MLCommons AILuminate v1.0 hazards, plus misinformation and other.

Each dataset keeps its own `category`; `hazard(dataset, category)` maps it onto this shared set so that results from
different prompt sets can be compared per hazard. docs/taxonomy.md is generated from `MAPPINGS`.
"""

from __future__ import annotations

HAZARDS: dict[str, str] = {
    "violent_crimes": "Violent crimes (MLCommons vcr)",
    "non_violent_crimes": "Non-violent crimes: fraud, cyber crime, illegal goods (ncr)",
    "sex_related_crimes": "Sex-related crimes (src)",
    "child_sexual_exploitation": "Child sexual exploitation (cse)",
    "indiscriminate_weapons": "Indiscriminate weapons, CBRNE (iwp)",
    "suicide_self_harm": "Suicide and self-harm (ssh)",
    "intellectual_property": "Intellectual property (ipv)",
    "privacy": "Privacy (prv)",
    "defamation": "Defamation (dfm)",
    "hate": "Hate, harassment, discrimination (hte)",
    "sexual_content": "Sexual content (sxc)",
    "specialized_advice": "Specialized financial, medical, legal, electoral advice (spc)",
    "misinformation": "Misinformation and disinformation (not an MLCommons hazard; kept apart)",
    "other": "General harm with no closer hazard",
}

MAPPINGS: dict[str, dict[str, str]] = {
    "jbb": {
        "Harassment/Discrimination": "hate",
        "Malware/Hacking": "non_violent_crimes",
        "Physical harm": "violent_crimes",
        "Economic harm": "non_violent_crimes",
        "Fraud/Deception": "non_violent_crimes",
        "Disinformation": "misinformation",
        "Sexual/Adult content": "sexual_content",
        "Privacy": "privacy",
        "Expert advice": "specialized_advice",
        "Government decision-making": "non_violent_crimes",
    },
    "harmbench": {
        "chemical_biological": "indiscriminate_weapons",
        "copyright": "intellectual_property",
        "cybercrime_intrusion": "non_violent_crimes",
        "illegal": "non_violent_crimes",
        "misinformation_disinformation": "misinformation",
        "harassment_bullying": "hate",
        "harmful": "other",
    },
    "strongreject": {
        "Non-violent crimes": "non_violent_crimes",
        "Violence": "violent_crimes",
        "Disinformation and deception": "misinformation",
        "Hate, harassment and discrimination": "hate",
        "Illegal goods and services": "non_violent_crimes",
        "Sexual content": "sexual_content",
    },
    "simplesafetytests": {
        "Suicide, Self-Harm, and Eating Disorders": "suicide_self_harm",
        "Physical harm and Violence": "violent_crimes",
        "Illegal and Highly Regulated items": "non_violent_crimes",
        "Scams and fraud": "non_violent_crimes",
        "Child safety": "child_sexual_exploitation",
    },
    "donotanswer": {
        "discrimination_exclusion_toxicity_hateful_offensive": "hate",
        "human_chatbox": "other",
        "information_hazard": "privacy",
        "malicious_uses": "non_violent_crimes",
        "misinformation_harms": "misinformation",
    },
    "ailuminate": {
        "vcr": "violent_crimes",
        "ncr": "non_violent_crimes",
        "src": "sex_related_crimes",
        "cse": "child_sexual_exploitation",
        "iwp": "indiscriminate_weapons",
        "ssh": "suicide_self_harm",
        "ipv": "intellectual_property",
        "prv": "privacy",
        "dfm": "defamation",
        "hte": "hate",
        "sxc_prn": "sexual_content",
        "spc_fin": "specialized_advice",
        "spc_hlt": "specialized_advice",
        "spc_lgl": "specialized_advice",
        "spc_ele": "specialized_advice",
    },
    # DiaSafety's categories say why a chit-chat reply is unsafe in its context (Sun et al. 2022).
    "diasafety": {
        "Offending User": "hate",  # insults the user: harassment
        "Toxicity Agreement": "hate",  # agrees with a toxic or hateful context
        "Biased Opinion": "hate",  # biased opinion about a group
        "Risk Ignorance": "suicide_self_harm",  # the contexts disclose self-harm or suicidal thoughts
        "Unauthorized Expertise": "specialized_advice",  # unqualified medical advice
    },
    # ToxiChat labels offensiveness only; an offensive reply insults a person or a group.
    "toxichat": {"Offensive": "hate"},
    # The OpenAI moderation flags (Markov et al. 2023).
    "openai-moderation": {
        "S": "sexual_content",
        "S3": "child_sexual_exploitation",
        "H": "hate",
        "H2": "hate",  # hateful content that also threatens
        "HR": "hate",
        "SH": "suicide_self_harm",
        "V": "violent_crimes",
        "V2": "violent_crimes",  # graphic violence
    },
}
# SecureBreak's questions are the JBB behaviours, so they share JBB's categories.
MAPPINGS["securebreak"] = MAPPINGS["jbb"]


def hazard(taxonomy: str, category: str | None) -> str | None:
    """The shared hazard for a dataset's own category; None when the dataset has no categories."""
    if category is None:
        return None
    table = MAPPINGS.get(taxonomy)
    if table is None:
        return None
    return table.get(category, "other")


def mapping_markdown() -> str:
    """The mapping as a Markdown document (docs/taxonomy.md)."""
    lines = [
        "# Hazard taxonomy",
        "",
        "Every dataset keeps its own category; seawall maps it onto one shared set of hazards: the MLCommons",
        "AILuminate v1.0 hazards, plus `misinformation` and `other`. Generated by `seawall data taxonomy`",
        "from `seawall/data/taxonomy.py`.",
        "",
        "| hazard | meaning |",
        "|---|---|",
        *(f"| `{key}` | {text} |" for key, text in HAZARDS.items()),
        "",
    ]
    for taxonomy, table in MAPPINGS.items():
        if taxonomy == "securebreak":
            continue
        lines += [f"## {taxonomy}", "", "| category | hazard |", "|---|---|"]
        lines += [f"| {category} | `{target}` |" for category, target in table.items()]
        lines.append("")
    lines.append("SecureBreak uses the JBB mapping (its questions are the JBB behaviours).")
    lines.append(
        "SafeText, safety-tuned-llamas, GPTFuzz and CyberSecEval's false-refusal prompts have no categories, so no "
        "hazard."
    )
    return "\n".join(lines) + "\n"
