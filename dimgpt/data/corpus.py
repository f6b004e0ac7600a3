"""The embedded default corpus: real text that exists wherever Python is installed, offline.

Source: the "topics" of CPython's own help system, `pydoc_data.topics` (the text of the Python
Language Reference sections that `help("if")`, `help("class")`, ... print). It ships inside every
CPython installation (3.10+: about 80 documents, 0.46 MB of English prose with code), so the main job
and the offline tests always have a corpus with no network and no extra download. Licence: the
Python Software Foundation License Version 2, the licence of CPython and its documentation.

It is English, not French, and small: it proves the pipeline end to end; real training uses the
French sources of the data configuration.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

from dimgpt.errors import NotFoundError


def _topics() -> dict[str, str]:
	try:
		from pydoc_data.topics import topics
	except ImportError as e:  # some distributions strip it
		raise NotFoundError(
			"the embedded corpus (CPython's pydoc_data.topics) is missing from this Python installation: "
			"use a full CPython build or give the job other sources"
		) from e
	return topics


def embedded_documents() -> Iterator[str]:
	"""The embedded default corpus, one document per help topic, in a stable order."""
	topics = _topics()
	for name in sorted(topics):
		text = topics[name].strip()
		if text:
			yield text


def embedded_corpus_info() -> dict:
	"""Where the embedded corpus comes from, its size and licence."""
	documents = list(embedded_documents())
	return {
		"name": "CPython pydoc topics",
		"source": f"pydoc_data.topics, shipped with CPython {sys.version.split()[0]}",
		"language": "en",
		"licence": "Python Software Foundation License Version 2",
		"documents": len(documents),
		"characters": sum(map(len, documents)),
	}
