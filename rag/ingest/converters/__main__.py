"""`python -m rag.ingest.converters NICENESS`: one conversion for rag.ingest.converters.apart."""
import sys

from rag.ingest.converters.apart import main

sys.exit(main(sys.argv[1:]))
