"""Partner nodes (boxes): de-identified, verified, resumable transfer of images between two nodes over HTTP.

Two nodes are connected once.  The node that can be reached (the *polled* one, e.g. a university
server) makes the connection with ``POST /slicebox/api/boxes/createconnection`` and hands the URL it
answers (``<base>/slicebox/api/transactions/<token>``) to the other side, which calls
``POST /slicebox/api/boxes/connect`` with it.  From then on only the connecting node opens
connections: it PUSHes its own outgoing images and POLLs the other node for the images queued
there for it, so a hospital behind a firewall never accepts a connection.

Modules: ``connections`` (the :class:`Box` record, validation, making and finding boxes),
``outgoing`` (outgoing transactions and their state machine, mirrored into a job), ``incoming`` (the
receipts of what partners sent us), ``transfer`` (making, verifying and storing the bytes of one
image; the polled side's endpoints), ``transport`` (the small ``BoxTransport`` protocol, its HTTP
implementation and an in-memory one for tests), ``service`` (the push/poll loop and
:func:`submit_send`).  All durable state is in the index database (statements in ``index/boxes.py``).

Decisions (where Slicebox left a choice or had a known problem):

* Tokens are ``secrets.token_urlsafe(32)``, stored as SHA-256 hashes and compared with
  ``hmac.compare_digest``; the token is shown once, in the createconnection answer.  So the URL
  cannot be shown again: ``createconnection`` with an existing name is a 409 (delete the box and
  connect anew), not Slicebox's "return the same box".  ``connect`` with the same name and URL
  returns the existing box (#83); another URL for the name is a 409.  ``GET /boxes`` never shows a
  token.  Deleting a box revokes its token at once; its transactions stay listed, unfinished
  outgoing ones become FAILED ("the box was deleted").
* The transaction routes ``/slicebox/api/transactions/<token>/...`` accept the token of a POLL box
  (one made by createconnection) and nothing else: no Jupyter credentials, no XSRF cookie; a wrong,
  missing or revoked token is a 401 on every one of them, and the box token opens no other route.
* Every image is anonymized on the sender right before it leaves, with the transaction's profile
  (the box's default profile unless the send names one) and the tag values of its patient, through
  ``context.anonymized_bytes`` (which records the anonymization key on the sender).  Nothing
  anonymized is stored on the sender.  Images already flagged PatientIdentityRemoved=YES are
  anonymized too (nothing identifying leaves unless an option says so: a wrongly flagged image
  would leak), unlike Slicebox §4.6.  The box option ``sendAnonymousAsIs`` (createconnection /
  connect, default false) restores Slicebox's behaviour for the return path of results: such images
  leave as they are, tag values written, so the node holding their keys re-identifies them when they
  come back (anonymizing again would give them new pseudonyms).  The SHA-256 of the uncompressed bytes goes with them
  (header ``X-Slicebox-SHA256``); the bytes are deflated on the wire (``Content-Encoding``; level 1,
  run-length strategy), except images whose transfer syntax is compressed already and partners on
  this machine's loopback (``BoxSettings.compression`` "auto"), where compressing only costs CPU.
* The receiver verifies the hash before storing (mismatch → 400 ``HashMismatch``; the sender tries
  again, up to 5 times per image, then fails the image), stores through ``context.ingest`` with source
  ``box``/<box name> (re-identifying what matches its own keys), and records (sender's transaction,
  sequence number) → image: a resent image is answered from that record and not stored again.
* Speed: a push carries several images of a transaction (``BoxSettings.images_per_push``, 4) in one
  ``multipart/related`` request to ``.../images``, each part with its sequence number and SHA-256 and
  answered alone, so that both nodes pay a request's handling once for them; a partner without that
  route (403/404 there) gets one image per request, as before.  ``BoxSettings.concurrency`` requests
  of a box are in flight at once, a new one starting as
  soon as one finishes (no barrier between batches, no wait between rounds while work is pending);
  confirmations are committed (PUSH) or acknowledged (POLL, a list to ``outgoing/done``) in groups,
  and the receiver's records of concurrent receipts share one commit.
* An image is marked sent only when the receiver confirmed it durable (PUSH: the 200 of the upload;
  POLL: the receiver's ``outgoing/done`` after its ingest), so killing either node at any point loses
  nothing and duplicates nothing.  A transaction is FINISHED when every image is confirmed; FAILED,
  with the reason, once every image is settled and some could not be delivered (refused by the
  receiver as not acceptable DICOM, refused by the anonymizer, deleted before it left).  WAITING
  with the reason while the partner cannot be reached; PROCESSING while images move.
* Unreachable partners: the box backs off (poll interval × 2ⁿ, at most 60 s) and retries forever;
  other boxes are not held up.  A refused token (401/403) is treated the same (the admin can fix it).
* Progress: each outgoing transaction has a job (kind ``box-send``, counts ``sent`` and ``failed``)
  whose row the transaction keeps up to date; it survives restarts with the transaction.  It is not
  run by the job workers (a transaction waiting days for a partner must not hold a worker): cancel
  it by deleting the transaction (``DELETE /boxes/outgoing/transactions/{id}``); ``jobs/{id}/resume``
  does not apply to it.
* Poll answers are 200 with a list (empty when nothing is pending), not Slicebox's 404.
* Not done here: forwarding rules and tag filters (they call :func:`submit_send`), removal of
  outgoing rows when an image is deleted (a deleted image fails in its transaction instead).
"""

from __future__ import annotations

from .connections import Box, SendMethod
from .outgoing import ImageState, TransactionStatus
from .service import BoxService, BoxSettings, box_service_factory, configure_boxes, settings, submit_send
from .transport import BoxTransport, HttpTransport, InMemoryTransport

__all__ = [
    "Box",
    "BoxService",
    "BoxSettings",
    "BoxTransport",
    "HttpTransport",
    "ImageState",
    "InMemoryTransport",
    "SendMethod",
    "TransactionStatus",
    "box_service_factory",
    "configure_boxes",
    "settings",
    "submit_send",
]
