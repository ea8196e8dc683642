"""A checkpoint: what it holds and how it is written and read.

contents.py  the typed Payload and the states it holds (one to_dict, one from_dict)
fields.py    the field checks of Payload.from_dict, each naming its field when it fails
storage.py   the only module that calls torch.save / torch.load (atomic, hashed, weights_only)
weights.py   which of a checkpoint's weights to use (trained or averaged), torch-free
"""
