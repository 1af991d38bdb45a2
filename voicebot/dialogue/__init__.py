"""The dialogue brain, and the only package that imports Rasa: agent, actions, knowledge base, training."""
