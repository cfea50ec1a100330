"""Knowledge bases: parse, chunk, embed, index, retrieve, cite."""
