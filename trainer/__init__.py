"""The compiled trainer: flags -> config -> runtime -> data/model -> controller."""
