"""Sentence classification end to end on tiny texts the tests write: reading and tokenising, word
vectors from tiny files, ``TextClassifier`` (fit, predict, save, load), the CLI and the server."""

from __future__ import annotations

import random
import struct

import httpx
import numpy as np
import pytest
from conftest import write_csv
from serve_server import Server

from headstart.cli.main import main
from headstart.data.text import Vocabulary, read_lines, read_texts, split_files, tokenize
from headstart.data.vectors import read_vectors
from headstart.errors import HeadstartError
from headstart.estimator.text import MAX_MEMBERS, TextClassifier, load_text

POS, NEG = ["great", "wonderful", "lovely", "superb"], ["awful", "terrible", "boring", "dull"]
SMALL = dict(embed_dim=16, filters=8, epochs=10, widths=(2, 3), lr=3e-2, members=1)


def sentiment_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.choice(["positive", "negative"])
        word = rng.choice(POS if label == "positive" else NEG)
        rows.append((f"film {i} was {word} and {rng.choice(['long', 'short'])} .", label))
    return rows


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("texts")
    data = write_csv(root / "reviews.csv", ["text", "label"], sentiment_rows(240))
    clf = TextClassifier(**{**SMALL, "members": 2}).fit(data)  # the default's two CNNs and TF-IDF part
    return clf, clf.save(root / "model"), data


def test_tokenize_words_numbers_and_clitics_and_characters():
    assert tokenize("Don't pay $3.50 for it!") == ["do", "n't", "pay", "$", "3.50", "for", "it", "!"]
    assert tokenize("Ab  c", level="char") == ["a", "b", " ", "c"]


def test_vocabulary_pads_to_a_fixed_length_and_maps_unseen_words_to_unknown():
    v = Vocabulary.build([["a", "b", "a"], ["c"]])
    assert v.tokens[:3] == ["<pad>", "<unk>", "a"]
    assert v.encode([["a", "zzz", "c"], ["b"] * 9], length=4).tolist() == [[2, 1, 4, 0], [3, 3, 3, 3]]
    assert v.coverage([["a", "zzz"]]) == 0.5


def test_split_files_beside_each_other_are_the_splits_else_a_stable_hash_split(tmp_path):
    rows = sentiment_rows(30)
    for name in ("train.csv", "validation.csv", "test.csv"):
        write_csv(tmp_path / name, ["sentence", "label"], rows[:10])
    ds = read_texts(tmp_path / "train.csv")
    assert split_files(tmp_path) == split_files(tmp_path / "test.csv")
    assert ds.counts() == {"train": 10, "val": 10, "test": 10} and ds.text_column == "sentence"
    (tmp_path / "one").mkdir()
    single = write_csv(tmp_path / "one" / "all.csv", ["label", "text"], [(b, a) for a, b in rows])
    first, again = read_texts(single), read_texts(single)
    assert [s.split for s in first.samples] == [s.split for s in again.samples]
    assert first.task_name == "binary" and {s.split for s in first.samples} <= {"train", "val", "test"}


def test_a_csv_without_a_text_column_is_refused_with_the_fix(tmp_path):
    bad = write_csv(tmp_path / "x.csv", ["words", "label", "other"], [("a b", "x", "1")])
    with pytest.raises(HeadstartError, match="no text column.*--text-column"):
        read_texts(bad)
    assert read_texts(bad, text_column="words").samples[0].text == "a b"


def test_word2vec_text_glove_and_binary_vectors_cover_the_vocabulary(tmp_path):
    tokens = ["<pad>", "<unk>", "great", "awful", "missing"]
    (tmp_path / "w2v.txt").write_text("2 3\ngreat 1 2 3\nawful -1 -2 -3\n")
    (tmp_path / "glove.txt").write_text("Great 1 2 3\nawful -1 -2 -3\nother 0 0 0\n")
    with open(tmp_path / "w2v.bin", "wb") as f:
        f.write(b"2 3\n")
        for word, vec in (("great", (1, 2, 3)), ("awful", (-1, -2, -3))):
            f.write(word.encode() + b" " + struct.pack("<3f", *vec) + b"\n")
    for name in ("w2v.txt", "glove.txt", "w2v.bin"):
        v = read_vectors(tmp_path / name, tokens)
        assert (v.found, v.total, v.dim) == (2, 3, 3), name
        assert v.matrix[2].tolist() == [1, 2, 3] and v.matrix[3].tolist() == [-1, -2, -3]
        assert not v.matrix[0].any()
    with pytest.raises(HeadstartError, match="does not exist.*never downloads"):
        read_vectors(tmp_path / "nope.txt", tokens)


def test_text_classifier_learns_saves_and_loads_the_same_predictions(text_model):
    clf, model, _ = text_model
    assert clf.metrics_["test"]["accuracy"] >= 0.9, clf.metrics_["test"]
    assert clf.metrics_["validation"]["n_images"] == len(clf.dataset_.subset("val")) > 0
    texts = ["film 7 was lovely and short .", "film 9 was dull and long ."]
    assert clf.predict(texts) == ["positive", "negative"]
    back = load_text(model)
    np.testing.assert_allclose(back.predict_proba(texts), clf.predict_proba(texts), atol=1e-6)
    assert (model / "config.json").is_file() and not list(model.glob("*.pkl"))
    assert back.score(texts, ["positive", "negative"]) == 1.0


def test_the_tfidf_part_is_averaged_in_saved_without_pickle_and_loaded_the_same(text_model):
    import torch

    from headstart.backbones.text_tfidf import PREFIX
    from headstart.model.folder import load_model
    from headstart.training.text import predict_text_scores

    clf, model, _ = text_model
    texts = ["film 3 was superb", "awful", "film 2 was terrible and short ."]
    assert clf.tfidf_ is not None and clf.tfidf == 0.4 and "TF-IDF" in clf.fit_info_["tfidf"]
    assert clf.tfidf_.scores(["great", "boring"]).argmax(1).tolist() == [1, 0]  # alone, it already knows the words
    cnn = predict_text_scores(clf.network_, clf.task_, clf._encoder()(texts))
    np.testing.assert_allclose(clf.predict_proba(texts), 0.6 * cnn + 0.4 * clf.tfidf_.scores(texts), atol=1e-6)
    saved = load_model(model)
    assert len(saved.config["tfidf"]["word"]) == clf.tfidf_.word.idf_.shape[0] > 0
    assert {k for k in saved.network.state_dict()} == {k for k in clf.network_.state_dict()}
    assert len(clf.network_.members) == 2 and len(clf.fit_info_["best_epochs"]) == 2
    ids = torch.from_numpy(clf._encoder()(texts))
    with torch.no_grad():                                    # the two seeds differ; the network is their mean
        one, two = (m(ids) for m in clf.network_.members)
        mean = (one.sigmoid() + two.sigmoid()) / 2              # binary: the mean of two probabilities
        assert not torch.allclose(one, two) and torch.allclose(clf.network_(ids).sigmoid(), mean, atol=1e-6)
    np.testing.assert_allclose(saved.scores(texts), clf.predict_proba(texts), atol=1e-6)
    np.testing.assert_allclose(saved.tfidf.scores(texts), clf.tfidf_.scores(texts), atol=1e-6)
    alone = TextClassifier(**{**SMALL, "epochs": 1}, tfidf=0).fit(*zip(*sentiment_rows(40)))
    assert alone.tfidf_ is None and PREFIX not in str(alone.fit_info_)


def test_the_cpu_budget_decides_how_many_cnns_unless_members_is_given():
    rows = list(zip(*sentiment_rows(40)))
    tiny = dict(SMALL, epochs=1, members=None)
    one = TextClassifier(**tiny, budget=1e-6).fit(*rows)     # no room for a second: one CNN, and why
    assert one.fit_info_["members"]["trained"] == 1 and one.network_.config.members == 1
    assert "budget" in one.fit_info_["members"]["reason"]
    many = TextClassifier(**tiny, budget=1e6).fit(*rows)     # room for all: the ceiling
    assert many.fit_info_["members"]["trained"] == MAX_MEMBERS == len(many.network_.members)
    given = TextClassifier(**{**tiny, "members": 2}, budget=1e-6).fit(*rows)  # members wins over the budget
    assert given.fit_info_["members"]["trained"] == 2 and given.network_.config.members == 2
    with pytest.raises(HeadstartError, match="budget.*got 0"):
        TextClassifier(**tiny, budget=0).fit(*rows)


def test_an_ensemble_averages_its_members_probabilities_whatever_the_output():
    import torch

    from headstart.backbones.text_cnn import TextCNNConfig, build_text_cnn

    config = TextCNNConfig(embed_dim=4, widths=(2,), filters=3, members=3)
    ids = torch.randint(0, 9, (5, 6))
    for output, act in (("softmax", lambda z: z.softmax(-1)), ("sigmoid", torch.sigmoid), ("raw", lambda z: z)):
        torch.manual_seed(0)
        net = build_text_cnn(config, vocab_size=9, out_dim=4, output=output).eval()
        with torch.no_grad():
            mean = torch.stack([act(m(ids)) for m in net.members]).mean(0)
            assert torch.allclose(act(net(ids)), mean, atol=1e-5), output


def test_static_vectors_stay_fixed_and_fine_tuned_ones_move(tmp_path):
    lines = [f"{w} " + " ".join(["0.5"] * 8) for w in POS] + [f"{w} " + " ".join(["-0.5"] * 8) for w in NEG]
    vec = tmp_path / "vec.txt"
    vec.write_text("\n".join(lines) + "\n")
    rows = sentiment_rows(120)
    texts, labels = [t for t, _ in rows], [lab for _, lab in rows]
    for static in (True, False):
        clf = TextClassifier(**{**SMALL, "epochs": 2}, vectors=str(vec), static=static).fit(texts, labels)
        row = clf.vocabulary_.index["great"]
        moved = not np.allclose(clf.network_.embed.weight[row].detach().numpy(), 0.5)
        assert moved != static and clf.fit_info_["vectors"]["found"] == 8 and clf.embed_dim == 8


def test_numbers_and_label_sets_reuse_the_tasks():
    rng = random.Random(1)
    texts = [" ".join(rng.choice(POS + NEG) for _ in range(4)) for _ in range(120)]
    scores = [float(sum(w in POS for w in t.split())) for t in texts]
    reg = TextClassifier(**SMALL, task="continuous").fit(texts, scores)
    assert reg.task_.name == "continuous" and isinstance(reg.predict(["great lovely"])[0], float)
    tags = [[w for w in ("great", "awful") if w in t] or ["none"] for t in texts]
    multi = TextClassifier(**SMALL).fit(texts, tags)
    assert multi.task_.name == "multilabel" and isinstance(multi.predict(["great"])[0], list)


def test_cli_train_evaluate_predict_on_texts(tmp_path, capsys, text_model):
    _, _, data = text_model
    out = tmp_path / "m"
    assert main(["train", str(data), "--out", str(out), "--epochs", "3", "--widths", "2,3", "--filters", "8",
                 "--embed-dim", "16", "--quiet"]) == 0
    assert "word CNN" in capsys.readouterr().out
    assert main(["evaluate", str(out), str(data)]) == 0
    assert "accuracy" in capsys.readouterr().out
    lines = tmp_path / "lines.txt"
    lines.write_text("a lovely film\nso boring\n")
    assert main(["predict", str(out), str(lines), "what a great day", "--format", "csv"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("text,") and len(printed) == 4
    assert read_lines(lines) == ["a lovely film", "so boring"]
    assert main(["train", str(data), "--out", str(tmp_path / "w"), "--widths", "a,b", "--quiet"]) == 2
    assert main(["export", str(out)]) == 0 and (out / "model.onnx").is_file()
    printed = capsys.readouterr().out
    assert "parity" in printed and "the CNNs alone" in printed    # the TF-IDF part is not in the ONNX file


def test_serve_answers_texts_and_refuses_bad_requests(text_model, tmp_path):
    clf, model, _ = text_model
    with Server([model], log=tmp_path / "server.log") as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        info = c.get("/v1/text/model").json()
        assert info["kind"] == "text" and info["labels"] == ["negative", "positive"]
        r = c.post("/v1/text/predict", json={"texts": ["lovely and great", "awful"]})
        assert r.status_code == 200, r.text
        got = [p["label"] for p in r.json()["predictions"]]
        assert got == clf.predict(["lovely and great", "awful"])
        assert c.post("/v1/text/predict", json={"texts": [" "]}).status_code == 422
        assert c.post("/v1/text/predict", json={"texts": ["x"] * 300}).status_code == 422  # over the schema's maxItems
        assert "text.js" in c.get("/").text and c.get("/static/text.js").status_code == 200
        schema = c.get("/openapi.json").json()["paths"]["/v1/text/predict"]["post"]["responses"]
        assert {"200", "400", "409", "413", "422"} <= set(schema)  # 401 only with --token


def test_doctor_on_texts_flags_a_flipped_label_and_a_sentence_with_two_labels(tmp_path, capsys):
    from headstart.evaluation.text_doctor import check_texts

    rows = sentiment_rows(120)
    flipped = (rows[3][0], "negative" if rows[3][1] == "positive" else "positive")
    data = write_csv(tmp_path / "doc.csv", ["text", "label"], [*rows[:3], flipped, *rows[4:], rows[10]])
    report = check_texts(data)
    assert "doc.csv:5" in [s.rel for s in report.suspects]          # line 5 holds the flipped row
    assert main(["doctor", str(data)]) == 0 and "likely wrong labels" in capsys.readouterr().out


def test_split_files_without_validation_hold_out_part_of_train_by_hash(tmp_path):
    rows = sentiment_rows(100)
    write_csv(tmp_path / "train.csv", ["text", "label"], rows[:80])
    write_csv(tmp_path / "test.csv", ["text", "label"], rows[80:])
    counts = read_texts(tmp_path).counts()
    assert counts["test"] == 20 and counts["train"] + counts["val"] == 80 and 2 <= counts["val"] <= 20


def test_edge_padding_lets_the_widest_filter_see_the_first_word_alone():
    import torch

    from headstart.backbones.text_cnn import TextCNN, TextCNNConfig

    ids = torch.tensor([[2, 2, 2, 2]])                       # four real words, every embedding 1
    seen = {}
    for edge in (True, False):
        net = TextCNN(TextCNNConfig(embed_dim=1, widths=(3,), filters=1, edge_pad=edge), vocab_size=3, out_dim=2)
        with torch.no_grad():
            net.embed.weight[2] = 1.0
            net.convs[0].weight[:] = torch.tensor([[[-1.0, -1.0, 1.0]]])  # fires on "nothing, nothing, a word"
            net.convs[0].bias.zero_()
        seen[edge] = net.features(ids).item()
    assert seen == {True: 1.0, False: 0.0}                   # only with Kim's zeros is there a sentence start
    old = TextCNNConfig.from_dict({"level": "word", "embed_dim": 4, "widths": [3], "filters": 2, "dropout": 0.5,
                                   "length": 9})
    assert old.edge_pad is False and old.members == 1       # folders saved before keep their padding, one CNN


def test_an_unknown_optimiser_is_refused_with_the_choices():
    with pytest.raises(HeadstartError, match="adadelta"):
        TextClassifier(**{**SMALL, "epochs": 1}, optimizer="sgd").fit(*zip(*sentiment_rows(40)))
