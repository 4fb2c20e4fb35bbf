"""``bench.aot.compile_pieces``: every piece is tried in order, and a failing one is kept with its error."""

from bench import aot


def test_a_failed_piece_keeps_its_error_and_the_others_their_facts():
  def compile_piece(network, variant):
    if variant == 'bad':
      raise ValueError('no such variant')
    return {'network': network, 'variant': variant, 'fusions': len(variant)}

  pieces = [{'network': 'c2d', 'variant': 'ok'}, {'network': 'c2d', 'variant': 'bad'},
            {'network': 'i3d', 'variant': 'fine'}]
  assert aot.compile_pieces(pieces, compile_piece) == [
      {'network': 'c2d', 'variant': 'ok', 'fusions': 2},
      {'network': 'c2d', 'variant': 'bad', 'error': 'ValueError: no such variant'},
      {'network': 'i3d', 'variant': 'fine', 'fusions': 4}]
