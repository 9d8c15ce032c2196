"""Small SQuAD 2.0 files written in the test."""
from __future__ import annotations

import json


def squad_file(path, articles):
    """A small SQuAD 2.0 file: {title: [(context, [(question, answer or None)])]}."""
    data = []
    for title, paragraphs in articles.items():
        paras = []
        for p, (context, qas) in enumerate(paragraphs):
            paras.append({"context": context, "qas": [
                {"id": f"{title}-{p}-{i}", "question": q, "is_impossible": a is None,
                 "answers": [] if a is None else [{"text": a, "answer_start": context.index(a)}]}
                for i, (q, a) in enumerate(qas)]})
        data.append({"title": title, "paragraphs": paras})
    path.write_text(json.dumps({"version": "v2.0", "data": data}))
    return path
