package org.poscore

import java.math.BigInteger

/**
 * A small strict JSON reader for the scenario runner (no JSON library is on
 * the test classpath). It accepts what serde_json accepts and reads values
 * the way the Rust runner's `serde_json::Value` does: a missing field or an
 * index into a non-object is [Json.Null]; `asLong`/`asULong` are null for
 * numbers outside i64/u64 or with a fraction or exponent (and for `-0`,
 * a float in serde_json); a repeated key keeps its last value.
 */
sealed class Json {
    object Null : Json()
    data class Bool(val value: Boolean) : Json()
    /** A number as written; `long`/`ulong` set when it is an integer serde_json stores as i64/u64. */
    class Num(val text: String, val long: Long?, val ulong: ULong?) : Json() {
        override fun toString() = text
    }
    data class Str(val value: String) : Json()
    data class Arr(val items: List<Json>) : Json()
    data class Obj(val fields: Map<String, Json>) : Json()

    /** `value[field]`: the field, or [Null] when missing or when this is not an object. */
    operator fun get(field: String): Json = (this as? Obj)?.fields?.get(field) ?: Null

    /** `value.get(field)`: the field when this is an object that has it. */
    fun getOrNull(field: String): Json? = (this as? Obj)?.fields?.get(field)

    val isNull get() = this is Null
    val asString get() = (this as? Str)?.value
    val asBool get() = (this as? Bool)?.value
    val asLong get() = (this as? Num)?.long
    val asULong get() = (this as? Num)?.ulong
    val asArray get() = (this as? Arr)?.items
    val asObject get() = (this as? Obj)?.fields

    companion object {
        /** Parses one JSON text (whitespace around it allowed); throws [JsonException]. */
        fun parse(text: String): Json = JsonParser(text).document()
    }
}

class JsonException(message: String) : Exception(message)

private class JsonParser(private val s: String) {
    private var i = 0

    fun document(): Json {
        skipWs()
        val v = value(0)
        skipWs()
        if (i != s.length) fail("trailing characters")
        return v
    }

    private fun fail(what: String): Nothing {
        var line = 1
        var col = 1
        for (k in 0 until minOf(i, s.length)) {
            if (s[k] == '\n') { line++; col = 1 } else col++
        }
        throw JsonException("$what at line $line column $col")
    }

    private fun skipWs() {
        while (i < s.length && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++
    }

    private fun value(depth: Int): Json {
        if (depth > 128) fail("recursion limit exceeded")
        if (i >= s.length) fail("EOF while parsing a value")
        return when (val c = s[i]) {
            '{' -> obj(depth)
            '[' -> arr(depth)
            '"' -> Json.Str(string())
            't' -> literal("true", Json.Bool(true))
            'f' -> literal("false", Json.Bool(false))
            'n' -> literal("null", Json.Null)
            else -> if (c == '-' || c in '0'..'9') number() else fail("expected value")
        }
    }

    private fun literal(word: String, v: Json): Json {
        if (!s.startsWith(word, i)) fail("expected ident")
        i += word.length
        return v
    }

    private fun obj(depth: Int): Json {
        i++ // {
        val fields = LinkedHashMap<String, Json>()
        skipWs()
        if (i < s.length && s[i] == '}') { i++; return Json.Obj(fields) }
        while (true) {
            skipWs()
            if (i >= s.length || s[i] != '"') fail("key must be a string")
            val key = string()
            skipWs()
            if (i >= s.length || s[i] != ':') fail("expected `:`")
            i++
            skipWs()
            fields[key] = value(depth + 1)
            skipWs()
            if (i >= s.length) fail("EOF while parsing an object")
            when (s[i]) {
                ',' -> i++
                '}' -> { i++; return Json.Obj(fields) }
                else -> fail("expected `,` or `}`")
            }
        }
    }

    private fun arr(depth: Int): Json {
        i++ // [
        val items = ArrayList<Json>()
        skipWs()
        if (i < s.length && s[i] == ']') { i++; return Json.Arr(items) }
        while (true) {
            skipWs()
            items.add(value(depth + 1))
            skipWs()
            if (i >= s.length) fail("EOF while parsing a list")
            when (s[i]) {
                ',' -> i++
                ']' -> { i++; return Json.Arr(items) }
                else -> fail("expected `,` or `]`")
            }
        }
    }

    private fun hex4(): Int {
        if (i + 4 > s.length) fail("EOF while parsing a string")
        var n = 0
        repeat(4) {
            val d = Character.digit(s[i], 16)
            if (d < 0) fail("invalid escape")
            n = n * 16 + d
            i++
        }
        return n
    }

    private fun string(): String {
        i++ // opening quote
        val out = StringBuilder()
        while (true) {
            if (i >= s.length) fail("EOF while parsing a string")
            val c = s[i]
            when {
                c == '"' -> { i++; return out.toString() }
                c == '\\' -> {
                    i++
                    if (i >= s.length) fail("EOF while parsing a string")
                    val e = s[i++]
                    when (e) {
                        '"' -> out.append('"')
                        '\\' -> out.append('\\')
                        '/' -> out.append('/')
                        'b' -> out.append('\b')
                        'f' -> out.append('\u000c')
                        'n' -> out.append('\n')
                        'r' -> out.append('\r')
                        't' -> out.append('\t')
                        'u' -> {
                            val u = hex4()
                            when {
                                u in 0xD800..0xDBFF -> {
                                    if (!s.startsWith("\\u", i)) fail("lone leading surrogate in hex escape")
                                    i += 2
                                    val low = hex4()
                                    if (low !in 0xDC00..0xDFFF) fail("lone leading surrogate in hex escape")
                                    out.append(u.toChar()).append(low.toChar())
                                }
                                u in 0xDC00..0xDFFF -> fail("lone trailing surrogate in hex escape")
                                else -> out.append(u.toChar())
                            }
                        }
                        else -> { i--; fail("invalid escape") }
                    }
                }
                c.code < 0x20 -> fail("control character (\\u0000-\\u001F) found while parsing a string")
                else -> { out.append(c); i++ }
            }
        }
    }

    private fun number(): Json {
        val start = i
        val negative = s[i] == '-'
        if (negative) i++
        if (i >= s.length) fail("EOF while parsing a value")
        if (s[i] == '0') {
            i++
            if (i < s.length && s[i] in '0'..'9') fail("invalid number")
        } else if (s[i] in '1'..'9') {
            while (i < s.length && s[i] in '0'..'9') i++
        } else fail("invalid number")
        var integer = true
        if (i < s.length && s[i] == '.') {
            integer = false
            i++
            if (i >= s.length || s[i] !in '0'..'9') fail("invalid number")
            while (i < s.length && s[i] in '0'..'9') i++
        }
        if (i < s.length && (s[i] == 'e' || s[i] == 'E')) {
            integer = false
            i++
            if (i < s.length && (s[i] == '+' || s[i] == '-')) i++
            if (i >= s.length || s[i] !in '0'..'9') fail("invalid number")
            while (i < s.length && s[i] in '0'..'9') i++
        }
        val text = s.substring(start, i)
        if (!integer) return Json.Num(text, null, null)
        val n = BigInteger(text)
        // serde_json: a non-negative integer is u64 (also an i64 when it
        // fits), a negative one i64; -0 and anything outside those is f64.
        val u64Max = BigInteger.ONE.shiftLeft(64).subtract(BigInteger.ONE)
        return when {
            negative && n.signum() == 0 -> Json.Num(text, null, null)
            negative -> if (n.bitLength() <= 63) Json.Num(text, n.toLong(), null) else Json.Num(text, null, null)
            n <= u64Max -> Json.Num(text, if (n.bitLength() <= 63) n.toLong() else null, n.toString().toULong())
            else -> Json.Num(text, null, null)
        }
    }
}
