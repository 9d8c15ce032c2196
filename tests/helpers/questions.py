"""Questions the tests ask: the seed questions with their gold answers, those the seeds do not answer,
and questions over the length limit."""

ANSWERABLE = [
    ("Who did Anthropic hire to lead its infrastructure effort?", "Eric Boyd", "001_fa8838ea44d7c2c5.txt"),
    ("What feature did Anthropic launch for enterprise clients?", "Managed Agents", "001_fa8838ea44d7c2c5.txt"),
    ("When did Karpathy announce his move to Anthropic?", "May 2026", "004_81a3bf9f650335dc.txt"),
]
UNANSWERABLE = ["What is the capital of France?", "Who wrote Pride and Prejudice?"]

LONG_QUESTION = " ".join(["a"] * 500)  # 500 tokens, under the 1,000-character limit
CHINESE_QUESTION = "中" * 308
