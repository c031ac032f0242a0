"""Models: the LLM, the generator, the scorers, the captioner, the paper's architectures at random initialisation, training loops. Imports `data` and `reporting`."""
