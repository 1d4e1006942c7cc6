# Sourced by the bench scripts that summarise runs in awk: MEDIAN_AWK defines median(values, n),
# which sorts values[1..n] in place (so values[1] and values[n] are then the lowest and highest)
# and returns their median. Prepend it to an awk program: Debian's mawk has no `-e` or `@include`.
# shellcheck disable=SC2034 # used by the scripts that source this file
MEDIAN_AWK='
    function median(values, n,   i, j, t) {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (values[j] < values[i]) { t = values[i]; values[i] = values[j]; values[j] = t }
        return n % 2 ? values[(n + 1) / 2] : (values[n / 2] + values[n / 2 + 1]) / 2
    }'
